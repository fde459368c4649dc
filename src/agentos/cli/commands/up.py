"""``agentos up FILE``: start a manifest's team (and a kernel if none runs), then follow it."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from ...client import AsyncClient
from ...errors import AgentOSError, KernelNotRunning
from ...manifest import Manifest
from ..launch import StartedKernel, add_socket_option, duration_option, marker_path, socket_path
from ..output import Painter, PipeSafe, wants_colour
from ..projects import add_project_option, describe_running
from ..team import Member, Team, TeamConflict, TeamError
from .validate import load_or_report

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start a manifest's agents in dependency order and follow their output")
    p.add_argument("file", type=Path, help="the manifest (YAML)")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once the team is up, leaving it (and a kernel started for it) running")
    p.add_argument("--grace", type=duration_option, default="10s",
                   help="how long agents get to exit after SIGTERM when the team stops (default 10s)")
    p.add_argument("--exit-code-from", metavar="NAME",
                   help="exit with this agent's exit status once the team has ended")
    add_project_option(p)
    p.add_argument("--force-recreate", action="store_true",
                   help="replace agents of the project that run with another spec than the manifest's "
                   "(without it, up refuses and shows what differs)")
    add_socket_option(p)
    p.set_defaults(func=run)


def _outcome(members: list[Member], exit_code_from: str | None) -> int:
    """Status 0 only when every agent ended as its manifest's ``expect`` says (a clean exit unless
    it says otherwise) or could not be checked on this degraded host, else 1; ``--exit-code-from
    NAME`` hands the decision to that agent's status."""
    expected = [m for m in members if m.as_expected and m.ending != "exited"]
    unverifiable = [m for m in members if not m.as_expected and m.unverifiable]
    unexpected = [m for m in members if not m.as_expected and not m.unverifiable]
    parts = []
    if expected:
        parts.append("as expected: " + ", ".join(f"{m.name} ({m.describe_ending()})" for m in expected))
    if unverifiable:
        parts.append("not verifiable here: " + ", ".join(
            f"{m.name} ({m.describe_ending()}, expected {m.spec.expect}; {m.unverifiable} not enforced)"
            for m in unverifiable))
    if unexpected:
        parts.append("not cleanly: " + ", ".join(
            f"{m.name} ({m.describe_ending()}, expected {m.spec.expect}"
            + (f"; not enforced here: {', '.join(m.degraded)}" if m.degraded else "") + ")"
            for m in unexpected))
    print("; ".join(["every agent has ended", *parts]), flush=True)
    if exit_code_from is not None:
        return next(m.exit_status for m in members if m.name == exit_code_from)
    return 1 if unexpected else 0


def run(args: argparse.Namespace) -> int:
    manifest = load_or_report(args.file)
    if manifest is None:
        return 1
    # A reader that goes away (`agentos up -d FILE | head -1`) must not stop the team or its kernel.
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafe(sys.stdout), PipeSafe(sys.stderr)
    try:
        return asyncio.run(_up(manifest, args))
    finally:
        sys.stdout, sys.stderr = streams


async def _up(manifest: Manifest, args: argparse.Namespace) -> int:
    socket = socket_path(args.socket, manifest)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    kernel = None
    try:
        client = await AsyncClient.connect(socket)
    except KernelNotRunning:
        kernel = StartedKernel(manifest, socket)
        try:
            finished, connected = await _unless(stop, kernel.connect())
        except BaseException:
            kernel.stop()
            raise
        if not finished or connected is None:
            kernel.stop()
            return 130
        client = connected
        # Once it serves: its pid (HELLO's, not its guardian's) is what down and ps show.
        print(f"started a kernel (pid {kernel.pid}) on {socket}, logging to {kernel.log_path}", flush=True)
    team = Team(manifest, client, socket, Painter(wants_colour(sys.stdout)), show_output=not args.detach,
                grace=args.grace, project=args.project, force_recreate=args.force_recreate)
    if args.exit_code_from is not None and args.exit_code_from not in team.members:
        await client.close()
        if kernel is not None:
            kernel.stop()
        print(f"agentos up: error: --exit-code-from {args.exit_code_from}: no such agent in "
              f"{args.file} (agents: {', '.join(team.members)})", file=sys.stderr, flush=True)
        return 2

    def stopped(name: str, info: dict[str, Any]) -> None:
        team.say(name, "stopped", "dim")

    try:
        # Subscribed before anything starts, so no exit or restart goes unseen.
        events = None if args.detach else await client.subscribe("agent.*")
        if not (await _unless(stop, team.start()))[0]:
            print("interrupted: stopping the team", flush=True)
            await team.stop(stopped)
            return 130
        if args.detach:
            if kernel is not None:
                marker_path(socket).write_text(f"{kernel.pid}\n")
                kernel = None  # It stays up for the team; `agentos down` stops it.
            print(f"{len(team.members)} agent(s) of project {team.project} up; `agentos ps -p {team.project}` "
                  f"lists them, `agentos down {args.file}` stops them", flush=True)
            return 0
        assert events is not None
        finished, members = await _unless(stop, team.watch(events))
        if finished and members is not None:
            return _outcome(members, args.exit_code_from)
        print("stopping the team", flush=True)
        await team.stop(stopped)
        return 130
    except TeamConflict as exc:
        # Nothing was started, and what runs is not this command's to stop.
        print(f"agentos up: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except TeamError as exc:
        if await _died(kernel, client):
            raise kernel.failure("while the team was starting") from None  # type: ignore[union-attr]
        print(f"agentos up: error: {exc}", file=sys.stderr, flush=True)
        await team.stop(stopped)
        return 1
    except (AgentOSError, OSError):
        # A kernel we started that dies shows up here as a dropped connection: its log says why.
        if await _died(kernel, client):
            raise kernel.failure("while the team ran") from None  # type: ignore[union-attr]
        raise
    finally:
        if kernel is not None and (others := await _still_running(client)):
            # Started for this team, but other projects run on it now: not this command's to stop.
            marker_path(socket).write_text(f"{kernel.pid}\n")
            print(f"kernel left running (pid {kernel.pid}): {describe_running(others)}", flush=True)
            kernel = None
        await client.close()
        if kernel is not None:
            kernel.stop()


async def _still_running(client: AsyncClient) -> list[dict[str, Any]]:
    """The agents that still run on the kernel (none if it no longer answers)."""
    try:
        return await client.list_agents(status="running")
    except (AgentOSError, OSError):
        return []


async def _died(kernel: StartedKernel | None, client: AsyncClient) -> bool:
    """Whether the kernel this command started is gone (its connection no longer answers)."""
    if kernel is None:
        return False
    try:
        await client.noop(b"")
        return False
    except (AgentOSError, OSError):
        return kernel.exited(grace=5.0)


async def _unless(stop: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run ``work`` unless ``stop`` is set first (then cancel it): ``(finished, its result)``."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False, None
