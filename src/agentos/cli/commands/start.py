"""``agentos start|stop|restart NAME``: an agent's process, as ``docker compose start/stop/restart``.

``stop`` is KILL (SIGTERM, SIGKILL after ``--grace``): an agent someone stopped is never brought
back by its restart policy. ``start`` spawns a stopped agent again from the SPAWN request the kernel
remembers of it (START), or, with ``-f FILE``, as that manifest declares it now (for an agent the
kernel no longer remembers: it forgets ended agents past ``processes.keep_ended`` and at a
restart). ``restart`` is stop, then start.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...client import Client
from ...errors import NotFound
from ...manifest import Manifest
from ...protocol import Op
from ..launch import add_socket_option, duration_option, socket_path
from .validate import load_or_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, doc in (
            ("start", "start a stopped agent again, as it was last started (or as -f FILE declares it)"),
            ("stop", "stop an agent (SIGTERM, then SIGKILL after --grace); its restart policy does not "
                     "bring it back"),
            ("restart", "stop an agent, then start it again")):
        p = sub.add_parser(verb, help=doc)
        p.add_argument("name", help="the agent's name (its id with --id)")
        p.add_argument("--id", action="store_true", help="NAME is an agent id")
        if verb != "start":
            p.add_argument("--grace", type=duration_option, default="10s",
                           help="time between SIGTERM and SIGKILL (default 10s)")
        if verb != "stop":
            p.add_argument("-f", "--file", type=Path, help="start it as this manifest declares it, not "
                           "as the kernel remembers it")
        add_socket_option(p)
        p.set_defaults(func=run, verb=verb)


def run(args: argparse.Namespace) -> int:
    from ..main import UserError

    manifest: Manifest | None = None
    if getattr(args, "file", None) is not None:
        if args.id:
            raise UserError("-f names an agent of the manifest by name, not --id")
        manifest = load_or_report(args.file)
        if manifest is None:
            return 1
    target = {"id": args.name} if args.id else {"agent": args.name}
    with Client(socket_path(args.socket, manifest)) as client:
        if args.verb != "start":
            info = client.kill(**target, grace=args.grace)
            state = "stopped" if info["killed"] else "was not running"
            print(f"{info['name']} ({info['id']}) {state}: {info['status']}")
            if args.verb == "stop":
                return 0
            # By id, the stopped process's request is the one started again.
        info = _start(client, args, manifest, target)
    if info.get("started", True):
        print(f"{info['name']} ({info['id']}) started: pid {info['pid']}")
    else:
        print(f"{info['name']} ({info['id']}) already running: pid {info['pid']}")
    return 0


def _start(client: Client, args: argparse.Namespace, manifest: Manifest | None,
           target: dict[str, Any]) -> dict[str, Any]:
    from ..main import UserError

    if manifest is None:
        try:
            return client.start(**target)
        except NotFound as exc:
            raise UserError(f"{exc}; the kernel forgets ended agents at a restart and past "
                            f"processes.keep_ended: `agentos {args.verb} {args.name} -f MANIFEST` starts it as "
                            "its manifest declares it") from None
    spec = next((spec for spec in manifest.agents if args.name in spec.instance_names()), None)
    if spec is None:
        declared = sorted(name for spec in manifest.agents for name in spec.instance_names())
        raise UserError(f"{args.file} declares no agent {args.name!r} (it declares {', '.join(declared)})")
    running = client.list_agents(status="running", name=args.name)
    if running:
        return {**running[0], "started": False}
    return client._call(Op.SPAWN, spec.to_spawn_request(args.name))
