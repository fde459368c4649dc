"""``agentos logs NAME [-f]``: an agent's captured output; ``agentos logs [-f] FILE`` or ``--all``:
every agent of a manifest (or of the kernel), each line prefixed with its agent's name, as
``docker compose logs [-f]`` shows a project. Following, a restarted agent's new process is
followed too; it ends once none of those agents runs or waits for a restart (or at Ctrl-C: 130).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...client import AsyncClient
from ...errors import NotFound
from ...protocol.lifecycle import ENDED_TOPICS, Status, Topic
from ..agents import latest, order
from ..launch import add_socket_option, connect, socket_path
from ..output import Painter, wants_colour


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="print an agent's output, or every agent's of a manifest (FILE) or "
                       "the kernel (--all), prefixed with their names")
    p.add_argument("name", nargs="?", help="the agent's name (its id with --id), or a manifest file: its agents")
    p.add_argument("--id", action="store_true", help="NAME is an agent id")
    p.add_argument("--all", action="store_true", help="every agent the kernel knows")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the agent (all of them) ends")
    p.add_argument("--tail", type=int, help="only the last TAIL bytes of each (default 64 KiB)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..main import UserError

    if args.all == (args.name is not None):
        raise UserError("give an agent's NAME, a manifest FILE or --all")
    if args.all or (not args.id and _is_manifest(args.name)):
        return _run_many(args)
    target = {"id": args.name} if args.id else {"agent": args.name}
    with connect(args) as client:
        if not args.follow:
            sys.stdout.write(client.logs(**target, tail=args.tail))
            return 0
        for chunk in client.follow_logs(**target, tail=args.tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    return 0


def _is_manifest(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()


def _run_many(args: argparse.Namespace) -> int:
    from .validate import load_or_report

    names: set[str] | None = None
    project: str | None = None
    socket = socket_path(args.socket)
    if not args.all:
        manifest = load_or_report(Path(args.name))
        if manifest is None:
            return 1
        names = {name for spec in manifest.agents for name in spec.instance_names()}
        project = manifest.project
        socket = socket_path(args.socket, manifest)
    painter = Painter(wants_colour(sys.stdout))
    asyncio.run(_Prefixed(names, project, args.tail, painter).show(socket, args.follow))
    return 0


class _Prefixed:
    """Several agents' output as ``name | line``, names aligned and, on a terminal, coloured."""

    def __init__(self, names: set[str] | None, project: str | None, tail: int | None,
                 painter: Painter) -> None:
        self.names = names
        #: A manifest's agents are its project's: another project's agent of the same name is not.
        self.project = project
        self.tail = tail
        self.paint = painter
        self.width = max(map(len, names)) if names else 0
        self._following: dict[str, asyncio.Task[None]] = {}

    def _wanted(self, name: str, project: str | None = None) -> bool:
        if self.names is None:
            return True
        if self.project is not None and project is not None and project != self.project:
            return False
        return name in self.names or name in (f"{self.project}/{n}" for n in self.names)

    def _say(self, name: str, line: str) -> None:
        print(f"{self.paint.name(name, self.width)} | {line}", flush=True)

    async def show(self, socket: Path, follow: bool) -> None:
        async with await AsyncClient.connect(socket) as client:
            agents = order([a for a in latest(await client.list_agents(project=self.project))
                            if self._wanted(a["name"])])
            if self.names is None:
                self.width = max((len(a["name"]) for a in agents), default=0)
            if not follow:
                for info in agents:
                    await self._print(client, info, follow=False)
                return
            async with await client.subscribe(Topic.STARTED, *ENDED_TOPICS, Topic.GIVEN_UP) as events:
                try:
                    for info in agents:
                        self._follow(client, info)
                    # Judged by the listing taken before any output: what ended since is in `events`.
                    if await self._still_going(client, [a for a in agents if a["status"] in Status.LIVE]):
                        async for event in events:
                            if not self._wanted(event.get("name", ""), event.get("project")):
                                continue
                            if event["topic"] == Topic.STARTED:
                                self._follow(client, event)
                            elif not await self._still_going(client):
                                break
                finally:
                    for failure in await asyncio.gather(*self._following.values(), return_exceptions=True):
                        if failure is not None:
                            raise failure

    def _follow(self, client: AsyncClient, info: Mapping[str, Any]) -> None:
        previous = self._following.get(info["name"])
        if previous is not None and not previous.done():
            return  # its current process is followed already
        self.width = max(self.width, len(info["name"]))
        self._following[info["name"]] = asyncio.get_running_loop().create_task(
            self._print(client, info, follow=True))

    async def _still_going(self, client: AsyncClient, running: list[Mapping[str, Any]] | None = None) -> bool:
        """Whether any of the agents runs (``running``, else asked now), or waits for its restart."""
        if running is None:
            running = [a for a in await client.list_agents(status="running", project=self.project)
                       if self._wanted(a["name"])]
        restarting = (await client.hello())["capabilities"].get("supervisor", {}).get("restarting", [])
        return bool(running) or any(self._wanted(name) for name in restarting)

    async def _print(self, client: AsyncClient, info: Mapping[str, Any], follow: bool) -> None:
        name, pending = info["name"], ""
        try:
            if follow:
                async for chunk in client.follow_logs(id=info["id"], tail=self.tail):
                    *lines, pending = (pending + chunk).split("\n")
                    for line in lines:
                        self._say(name, line)
            else:
                *lines, pending = (await client.logs(id=info["id"], tail=self.tail)).split("\n")
                for line in lines:
                    self._say(name, line)
        except NotFound as exc:
            if exc.details.get("pruned"):
                self._say(name, "(its log was pruned by the kernel's log retention)")
        if pending:
            self._say(name, pending)
