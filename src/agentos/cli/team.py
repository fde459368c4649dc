"""A manifest's team on a running kernel: start it in dependency order, watch it, stop it.

Used by ``agentos up``. Each agent starts once everything it depends on is
ready (independent agents start side by side); readiness is judged as the
manifest says (READY call, a log line, a delay). While the team runs, its
output is streamed with each line prefixed by the agent's name, and lifecycle
events (exits, restarts, OOM kills, failures) are printed as they happen.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ..client import AsyncClient
from ..client.messaging import AsyncSubscription
from ..errors import AgentOSError, NotFound
from ..manifest import AgentSpec, Manifest
from ..protocol import Op
from ..protocol.lifecycle import ENDED_TOPICS, Status, Topic
from ..protocol.requests import SpawnRequestWire
from ..supervision.policy import RestartPolicy
from .output import Painter, size

#: LOGS returns at most this much of what an agent wrote before we started following it.
_FROM_START = 1024 * 1024
#: How long an ended agent's last output may take to arrive before its exit is printed anyway.
_DRAIN_S = 5.0


class TeamError(AgentOSError):
    """The team could not be started as the manifest says."""


class TeamConflict(TeamError):
    """Agents of the team's names already run in its project with another spec; nothing was started."""


@dataclasses.dataclass
class Member:
    """One running copy of a declared agent (a replica) and what is known of its current process."""

    spec: AgentSpec
    name: str
    id: str | None = None
    #: No more processes are coming: it ended and its restart policy will not bring it back.
    final: bool = False
    status: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    #: The kernel gave up restarting it (``agent.given_up``): the team did not hold.
    gave_up: bool = False
    #: What the kernel could not enforce for it (its SPAWN report's ``degraded``), as allow_degraded let it.
    degraded: tuple[str, ...] = ()

    @property
    def ending(self) -> str:
        """How it ended as ``expect`` names endings: ``exited`` is an exit 0, ``failed`` anything else
        the agent did to itself (or restarts given up); ``killed`` someone stopped it."""
        if self.gave_up or self.status not in (Status.EXITED, Status.OOM_KILLED, Status.KILLED, None):
            return Status.FAILED  # a non-zero exit, a signal, a timeout
        return self.status or Status.RUNNING

    @property
    def as_expected(self) -> bool:
        """Whether it ended as its manifest expects; a KILL someone asked for is never a failure."""
        return self.ending == Status.KILLED or self.spec.expect in ("any", self.ending)

    @property
    def unverifiable(self) -> str | None:
        """The limit an expected OOM kill needed that this host did not enforce (the manifest
        allowed that with ``allow_degraded``), when the agent then exited cleanly: the run
        cannot tell whether the expectation holds, so it is reported, not failed."""
        needed = _ENFORCED_BY.get(self.spec.expect)
        if needed in self.degraded and self.ending == Status.EXITED:
            return needed
        return None

    def describe_ending(self) -> str:
        """``exit 2``, ``signal 9``, ``oom_killed``, ``restarts given up``: for the summary line."""
        if self.gave_up:
            return "restarts given up"
        if self.status in (Status.OOM_KILLED, Status.KILLED, Status.TIMED_OUT):
            return self.status
        if self.signal:
            return f"signal {self.signal}"
        return f"exit {self.exit_code if self.exit_code is not None else '?'}"

    @property
    def exit_status(self) -> int:
        """What a shell would report for its last process (128+N for a signal, 137 for OOM)."""
        if self.exit_code is not None:
            return self.exit_code
        if self.signal:
            return 128 + self.signal
        return 137 if self.status == Status.OOM_KILLED else 1

    @property
    def policy(self) -> RestartPolicy:
        return RestartPolicy(**dataclasses.asdict(self.spec.restart))


class Team:
    """The agents of ``manifest`` on the kernel behind ``client``."""

    def __init__(self, manifest: Manifest, client: AsyncClient, socket: Path, painter: Painter,
                 out: TextIO | None = None, show_output: bool = True, grace: float = 10.0,
                 project: str | None = None, force_recreate: bool = False) -> None:
        self.manifest = manifest
        #: Its agents' names are unique within it, and only its agents are adopted or stopped.
        self.project = project or manifest.project
        self.force_recreate = force_recreate
        self.client = client
        self.socket = socket
        self.paint = painter
        self.out = out or sys.stdout
        self.show_output = show_output
        self.grace = grace
        self.order = manifest.start_order()
        self.members = {name: Member(spec, name) for spec in self.order for name in spec.instance_names()}
        self.width = max(len(name) for name in self.members)
        self._ready = {spec.name: asyncio.Event() for spec in self.order}
        self._followers: dict[str, asyncio.Task[None]] = {}

    # -- printing --------------------------------------------------------------------

    def say(self, name: str, text: str, style: str | None = None) -> None:
        """One line about ``name``: its output (no style) or an event (styled)."""
        body = self.paint.style(text, style) if style else text
        print(f"{self.paint.name(name, self.width)} | {body}", file=self.out, flush=True)

    # -- starting --------------------------------------------------------------------

    def qualified(self, name: str) -> str:
        """How the kernel names the member ``name``: within this team's project."""
        return f"{self.project}/{name}"

    async def start(self) -> None:
        """Start every agent not already running, each after its dependencies are ready.

        An agent of the project already running with the manifest's spec is adopted; one with
        another spec is a ``TeamConflict`` (with what differs), before anything starts, unless
        ``force_recreate``: then it is stopped and started again as the manifest says."""
        running = {a["name"]: a for a in await self.client.list_agents(status="running", project=self.project)
                   if a["name"] in self.members}
        changed = {name: diff for name, info in running.items()
                   if (diff := spec_diff(self.members[name].spec.to_spawn_request(name, self.project), info))}
        if changed and not self.force_recreate:
            raise TeamConflict("; ".join(
                f"{self.qualified(name)} already runs with another spec ({', '.join(diff)})"
                for name, diff in changed.items()) + ": stop it (agentos down), or replace it with "
                "agentos up --force-recreate")
        for name in changed:
            await self.client.kill(self.qualified(name), grace=self.grace)
            self.say(name, "recreated: its spec changed", "yellow")
            del running[name]
        try:
            async with asyncio.TaskGroup() as group:
                for spec in self.order:
                    group.create_task(self._start_spec(spec, running))
        except BaseExceptionGroup as group:
            # The first agent that could not start is the story; the others were cancelled because of it.
            raise _first_error(group) from None

    async def _start_spec(self, spec: AgentSpec, running: dict[str, Any]) -> None:
        for dep in spec.depends_on:
            await self._ready[dep].wait()
        await asyncio.gather(*(self._start_member(self.members[name], running.get(name))
                               for name in spec.instance_names()))
        self._ready[spec.name].set()

    async def _start_member(self, member: Member, existing: dict[str, Any] | None) -> None:
        if existing is not None:
            member.id = existing["id"]
            self.say(member.name, f"already running (pid {existing['pid']})", "dim")
            self._follow(member)
            return
        try:
            info = await self.client._call(Op.SPAWN, member.spec.to_spawn_request(member.name, self.project))
        except AgentOSError as exc:
            raise TeamError(f"cannot start {member.name}: {exc}") from None
        member.id = info["id"]
        member.degraded = tuple(info.get("isolation", {}).get("degraded", ()))
        self._follow(member)
        readiness = member.spec.readiness
        waiting = "" if readiness is None else f", waiting for {_describe_readiness(readiness)}"
        self.say(member.name, f"started (pid {info['pid']}){waiting}", "bold")
        if member.degraded:
            # allow_degraded let it start; the user still hears, every time, what does not hold.
            self.say(member.name, f"DEGRADED: not enforced on this host: {', '.join(member.degraded)} "
                     "(`agentos doctor` says why and how to get it)", "yellow")
        if readiness is not None:
            await self._wait_ready(member)
            self.say(member.name, "ready", "green")

    async def _wait_ready(self, member: Member) -> None:
        readiness = member.spec.readiness
        assert readiness is not None and member.id is not None
        try:
            async with asyncio.timeout(readiness.timeout):
                if readiness.kind == "ready-call":
                    info = await self.client.wait(id=member.id, until="ready")
                    if not info["ready"]:
                        raise TeamError(f"{member.name} ended ({_ending(info)}) before calling ready()")
                elif readiness.kind == "log-line":
                    await self._wait_for_line(member, re.compile(readiness.pattern or ""))
                else:
                    await asyncio.sleep(readiness.delay or 0.0)
                    [info] = [a for a in await self.client.list_agents(name=member.name) if a["id"] == member.id]
                    if info["status"] != Status.RUNNING:
                        raise TeamError(f"{member.name} ended ({_ending(info)}) during its start-up delay")
        except TimeoutError:
            raise TeamError(f"{member.name} was not ready within {readiness.timeout:g}s "
                            f"(waiting for {_describe_readiness(readiness)})") from None

    async def _wait_for_line(self, member: Member, pattern: re.Pattern[str]) -> None:
        # A connection of its own: closing it ends the kernel's stream once the line is seen.
        async with await AsyncClient.connect(self.socket) as client:
            pending = ""
            async for chunk in client.follow_logs(id=member.id, tail=_FROM_START):
                *lines, pending = (pending + chunk).split("\n")
                if any(pattern.search(line) for line in lines):
                    return
            if pattern.search(pending):
                return
        raise TeamError(f"{member.name} ended before printing a line matching {pattern.pattern!r}")

    # -- watching --------------------------------------------------------------------

    def _follow(self, member: Member) -> None:
        """Stream the member's current process's output (from its start) to our output."""
        if not self.show_output or member.id is None:
            return
        task = asyncio.get_running_loop().create_task(self._print_output(member.name, member.id))
        previous = self._followers.get(member.name)
        self._followers[member.name] = task
        if previous is not None and not previous.done():
            previous.cancel()

    async def _print_output(self, name: str, agent_id: str) -> None:
        pending = ""
        try:
            async for chunk in self.client.follow_logs(id=agent_id, tail=_FROM_START):
                *lines, pending = (pending + chunk).split("\n")
                for line in lines:
                    self.say(name, line)
        except (NotFound, asyncio.CancelledError):
            pass
        if pending:
            self.say(name, pending)

    async def watch(self, events: AsyncSubscription) -> list[Member]:
        """Print lifecycle events until every member has ended for good; return the members."""
        async for event in events:
            member = self.members.get(event.get("name", ""))
            if member is None or event.get("project") != self.project:
                continue
            follower = self._followers.get(member.name)
            if event["topic"] in ENDED_TOPICS and event["id"] == member.id and follower is not None:
                # Its last lines first, then the news that it ended.
                await asyncio.wait({follower}, timeout=_DRAIN_S)
            _HANDLERS.get(event["topic"], _ignore)(self, member, event)
            if all(m.final for m in self.members.values()):
                break
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        return list(self.members.values())

    def _on_started(self, member: Member, event: dict[str, Any]) -> None:
        if event["id"] != member.id:
            member.id, member.final = event["id"], False
            self._follow(member)

    def _on_ended(self, member: Member, event: dict[str, Any]) -> None:
        if event["id"] != member.id:
            return
        member.status, member.exit_code = event["status"], event.get("exit_code")
        member.signal = event.get("signal")
        member.final = event["topic"] == Topic.KILLED or not member.policy.restarts_after(member.status)
        if event["topic"] == Topic.OOM_KILLED:
            self.say(member.name, f"OOM-killed (memory limit {size(member.spec.limits.memory)})", "red")
        elif event["topic"] == Topic.KILLED:
            self.say(member.name, "killed", "yellow")
        else:
            style = "dim" if member.status == Status.EXITED else "red"
            self.say(member.name, f"exited ({_ending(event)})", style)

    def _on_restarted(self, member: Member, event: dict[str, Any]) -> None:
        self.say(member.name, f"restarted after {event['delay']:g}s (pid {event['pid']}, restart "
                 f"{event['restarts']})", "yellow")

    def _on_given_up(self, member: Member, event: dict[str, Any]) -> None:
        member.final, member.status, member.gave_up = True, Status.FAILED, True
        self.say(member.name, f"failed: {event.get('reason', 'gave up')}", "red")

    # -- stopping --------------------------------------------------------------------

    async def stop(self, on_stopped: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        """KILL every member, dependents before what they depend on."""
        for spec in reversed(self.order):
            await asyncio.gather(*(self._kill(name, on_stopped) for name in spec.instance_names()))
        # A restart that was already on its way when we passed: catch it too.
        for agent in await self.client.list_agents(status="running", project=self.project):
            if agent["name"] in self.members:
                await self._kill(agent["name"], on_stopped)
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)

    async def _kill(self, name: str, on_stopped: Callable[[str, dict[str, Any]], None] | None) -> None:
        try:
            info = await self.client.kill(self.qualified(name), grace=self.grace)
        except NotFound:
            return
        if info.get("killed") and on_stopped is not None:
            on_stopped(name, info)


_HANDLERS: dict[str, Callable[[Team, Member, dict[str, Any]], None]] = {
    Topic.STARTED: Team._on_started,
    **dict.fromkeys(ENDED_TOPICS, Team._on_ended),
    Topic.RESTARTED: Team._on_restarted,
    Topic.GIVEN_UP: Team._on_given_up,
}


def _ignore(team: Team, member: Member, event: dict[str, Any]) -> None:
    pass


def spec_diff(request: dict[str, Any], running: dict[str, Any]) -> list[str]:
    """What differs between the SPAWN ``request`` and what a running agent was spawned with (LIST's
    ``spec``), one entry per field: ``script: a.py -> b.py``; of ``env`` only the names (its values
    may be secrets). ``[]`` when they are the same, or when the kernel does not show the spec (an
    agent this caller did not spawn: it is not adopted blindly, so that is a difference too)."""
    spec = running.get("spec")
    if spec is None:
        return [f"spawned by someone else (id {running.get('id')})"]
    wanted = {k: v for k, v in msgspec.convert(request, SpawnRequestWire).fields().items()
              if k not in ("name", "project")}
    diff = []
    for key in sorted(set(wanted) | set(spec)):
        old, new = spec.get(key), wanted.get(key)
        if old == new:
            continue
        if key == "env":
            old, new = old or {}, new or {}
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            diff.append("env " + ", ".join(f"{k} ({_change(k, old, new)})" for k in names))
        else:
            diff.append(f"{key}: {_short(old)} -> {_short(new)}")
    return diff


def _change(key: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    return "added" if key not in old else "removed" if key not in new else "value differs"


def _short(value: Any) -> str:
    text = "(none)" if value is None else json.dumps(value, sort_keys=True)
    # The end of a long value tells most (a path's file name), so that is what stays.
    return text if len(text) <= 80 else "..." + text[-77:]


def _first_error(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group


def _describe_readiness(readiness: Any) -> str:
    if readiness.kind == "ready-call":
        return "it to call ready()"
    if readiness.kind == "log-line":
        return f"a line matching {readiness.pattern!r}"
    return f"{readiness.delay:g}s"


def _ending(info: dict[str, Any]) -> str:
    if info.get("signal"):
        return f"signal {info['signal']}"
    return f"code {info.get('exit_code')}"


#: The limit an expected ending comes from.
_ENFORCED_BY = {Status.OOM_KILLED: "limits.memory"}
