"""``agentos spawn [-p PROJECT] SCRIPT [ARGS...]``: start one agent with a manifest agent's secure
defaults, in a project if asked (as ``up -p`` starts a team's)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ...manifest import AgentSpec, Limits, Restart, Sandbox, schema
from ...protocol import Op
from ...supervision.policy import POLICIES
from ...units import parse_bytes, parse_cpu
from ..launch import add_socket_option, connect, env_option
from ..projects import project_option

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("spawn", help="start one agent (sandboxed, no network, 512Mi, 128 pids, 1 core "
                       "unless told otherwise)")
    p.add_argument("script", help="the Python file to run (a program with --command)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the agent")
    p.add_argument("--command", dest="is_command", action="store_true",
                   help="SCRIPT is a program, not a Python file")
    p.add_argument("--name", help="the agent's name (default: the file's name), unique in its project")
    p.add_argument("-p", "--project", type=project_option, metavar="NAME",
                   help="start it in this project, as `agentos up -p NAME` starts a team's agents "
                   "(default: no project)")
    p.add_argument("--memory", help="memory limit, e.g. 256Mi, or 'unlimited'")
    p.add_argument("--cpu", help="CPU limit in cores, e.g. 0.5 or 500m, or 'unlimited'")
    p.add_argument("--pids", help="most processes and threads, or 'unlimited'")
    p.add_argument("--network", action="store_true", help="share the host's network")
    p.add_argument("--no-sandbox", action="store_true", help="run as a plain child process")
    p.add_argument("--writable", action="append", default=[], metavar="PATH", help="bind PATH read-write")
    p.add_argument("--readonly", action="append", default=[], metavar="PATH", help="bind PATH read-only")
    p.add_argument("--env", action="append", default=[], type=env_option, metavar="NAME=VALUE",
                   help="set a variable")
    p.add_argument("--permissions", help="capabilities, comma separated (default: "
                   f"{','.join(schema.DEFAULT_CAPABILITIES)})")
    p.add_argument("--restart", choices=POLICIES, default="never", help="restart policy")
    p.add_argument("--allow-degraded", action="store_true",
                   help="start even if an isolation layer or limit cannot be enforced here")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..main import UserError

    try:
        spec = _spec(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with connect(args) as client:
        info = client._call(Op.SPAWN, spec.to_spawn_request(project=args.project))
    where = f"{info['project']}/" if info.get("project") else ""
    print(f"{where}{info['name']} started: id {info['id']}, pid {info['pid']}")
    degraded = (info.get("isolation") or {}).get("degraded")
    if degraded:
        print(f"not enforced here: {', '.join(degraded)}")
    return 0


def _spec(args: argparse.Namespace) -> AgentSpec:
    if args.is_command:
        # A bare program name is looked up on PATH by the kernel; a path is made absolute here.
        command = os.path.abspath(args.script) if os.sep in args.script else args.script
        program: dict[str, Any] = {"command": (command,)}
    else:
        program = {"script": Path(os.path.abspath(args.script))}
    name = args.name or Path(args.script).stem
    env = dict(args.env)
    defaults = Limits()
    limits = Limits(memory=_limit(args.memory, parse_bytes, "--memory", defaults.memory),
                    cpu=_limit(args.cpu, parse_cpu, "--cpu", defaults.cpu),
                    pids=_limit(args.pids, _count, "--pids", defaults.pids))
    sandbox = Sandbox(enabled=not args.no_sandbox, network=args.network, allow_degraded=args.allow_degraded,
                      writable=tuple(Path(os.path.abspath(p)) for p in args.writable),
                      readonly=tuple(Path(os.path.abspath(p)) for p in args.readonly))
    permissions = (tuple(p.strip() for p in args.permissions.split(",") if p.strip())
                   if args.permissions is not None else schema.DEFAULT_CAPABILITIES)
    return AgentSpec(name=name, args=tuple(args.args), env=env, sandbox=sandbox, limits=limits,
                     restart=Restart(policy=args.restart), permissions=permissions, **program)


def _limit(text: str | None, parse: Callable[[str, str], T], what: str, default: T | None) -> T | None:
    if text is None:
        return default
    if text == schema.UNLIMITED:
        return None
    return parse(text, what)


def _count(text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{what}: expected a positive whole number or 'unlimited', got {text!r}")
    return int(text)
