"""PAUSE and RESUME through the cgroup freezer, and the kernel's ``timeout`` and ``idle_timeout``.

The freezer's unit is one agent's own leaf (``cgroups.base``), never its directory:
pausing an agent freezes its leaf and each running descendant's, in one pass of
the event loop, and every frozen agent keeps the set of paused agents that hold it
(``Agent.holds``). So an agent is thawed only when the last PAUSE holding it is
resumed, and one agent inside a paused subtree can still be killed alone: v1
delivers no SIGKILL to a frozen task and cannot thaw a cgroup below a frozen one,
so freezing a whole directory would leave such a KILL hanging until the ancestor
resumed.

Activity, for ``idle_timeout``: a syscall of the agent's (on any of its connections)
starting or finishing, or ``touch()`` by a service that drives the agent from
outside (EXEC, files, EXPOSE and the connections through an exposure). Output is
not activity: a loop printing forever is not being used. A syscall still in flight
(a long THINK, a blocking RECV) does not count while it waits. Paused time counts
toward ``timeout`` (a wall-time budget the spawner set) and not toward
``idle_timeout`` (a frozen agent cannot be active; the idle clock restarts at
RESUME).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from ..cgroups import CgroupError, NoDriver, V1Driver, freeze, thaw
from ..errors import Unavailable
from ..kernel.syscalls import Call
from ..protocol.lifecycle import Topic
from ..protocol.requests import PauseRequest, ResumeRequest
from .agent import Agent
from .request import SpawnRequest

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes")

#: ``stop_reason`` of an agent the kernel killed at one of its timeouts.
TIMEOUT_REASONS = frozenset({"timeout", "idle_timeout"})


class Lifecycle:
    """Pauses, resumes and times out the agents of one ``ProcessService``."""

    def __init__(self, service: ProcessService) -> None:
        self.service = service
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._idle: dict[str, asyncio.TimerHandle] = {}
        #: Agent id -> loop time of its last activity (agents with an ``idle_timeout`` only).
        self._active: dict[str, float] = {}

    def start(self) -> None:
        kernel = self.service.kernel
        kernel.add_guard(self._on_call)
        kernel.add_observer(self._after_call)

    # -- PAUSE / RESUME --------------------------------------------------------------

    async def pause(self, call: Call) -> dict[str, Any]:
        """Freeze the agent and its running descendants; answers once all are frozen."""
        agent = self._target(call, cast(PauseRequest, call.request).fields(), "pause")
        if not agent.running:
            return {**agent.info(), "paused": False}
        if agent.id in agent.holds:
            return {**agent.info(), "paused": True}
        subtree = self._subtree(agent)
        newly = [member for member in subtree if not member.holds]
        held = {member.cgroup: member for member in newly}
        for member in subtree:
            member.holds.add(agent.id)
        for member in newly:
            self._stop_idle_clock(member)
        try:
            # One being killed meanwhile was thawed to take its signal: not frozen again.
            await freeze([member.cgroup for member in newly], still=lambda cgroup: bool(held[cgroup].holds))
        except (CgroupError, OSError) as exc:
            for member in subtree:
                member.holds.discard(agent.id)
            for member in newly:
                self._start_idle_clock(member)
            raise Unavailable(f"cannot pause agent {agent.name!r}: {exc}", id=agent.id) from None
        log.info("agent %s (%s) paused, %d agent(s) frozen", agent.name, agent.id, len(newly))
        self.service.kernel.events.publish(Topic.PAUSED, {"id": agent.id, "name": agent.name,
                                                          "frozen": [m.id for m in subtree]})
        return {**agent.info(), "paused": True}

    async def resume(self, call: Call) -> dict[str, Any]:
        """Undo this agent's PAUSE: thaw every agent no other PAUSE still holds."""
        agent = self._target(call, cast(ResumeRequest, call.request).fields(), "resume")
        if agent.id not in agent.holds:
            return {**agent.info(), "resumed": False}
        held = [member for member in self.service.table.running() if agent.id in member.holds]
        thawed = []
        for member in held:
            member.holds.discard(agent.id)
            if not member.holds:
                thawed.append(member)
        thaw([member.cgroup for member in thawed])
        # RESUME answers once they run again (a placed agent's node thaws it after its answer).
        await asyncio.gather(*(member.cgroup.thawed() for member in thawed))
        for member in thawed:
            self._start_idle_clock(member)
        log.info("agent %s (%s) resumed, %d agent(s) thawed", agent.name, agent.id, len(thawed))
        self.service.kernel.events.publish(Topic.RESUMED, {"id": agent.id, "name": agent.name,
                                                           "thawed": [m.id for m in thawed]})
        return {**agent.info(), "resumed": True}

    def _target(self, call: Call, ref: dict[str, Any], action: str) -> Agent:
        """The agent named, under KILL's rules: visible to the caller, and its descendant."""
        service = self.service
        agent = service._find_visible(call.identity, ref)
        service.permissions.check_kill(call.identity, agent.id, action)
        if agent.remote is not None:
            if not agent.remote.cgroup_report.get("pause"):
                raise Unavailable(f"{action} needs the cgroup freezer, which the node of agent {agent.name!r} lacks "
                                  f"({agent.remote.cgroup_report.get('driver')} driver)", id=agent.id)
        elif not service.driver.freezer:
            raise Unavailable(f"{action} needs the cgroup freezer, which this kernel lacks: "
                              f"{freezer_missing(service)}", driver=service.driver.name)
        return agent

    def _subtree(self, agent: Agent) -> list[Agent]:
        """The agent and its running descendants, parents first."""
        members, index = [agent], 0
        while index < len(members):
            members += [child for child in self.service.table.children(members[index]) if child.running]
            index += 1
        return members

    # -- hooks of the process service ------------------------------------------------

    def started(self, agent: Agent, request: SpawnRequest, parent: Agent | None) -> None:
        """Arm the new agent's timeouts; freeze it at once if its spawner is paused."""
        agent.timeout, agent.idle_timeout = request.timeout, request.idle_timeout
        loop = self.service.kernel.loop
        if request.deadline is not None:
            self._deadlines[agent.id] = loop.call_later(max(0.0, request.deadline - time.monotonic()),
                                                        self._expire, agent, "timeout")
        if parent is not None and parent.holds:
            # Started while its parent froze (a SPAWN in flight, a supervisor restart).
            agent.holds = set(parent.holds)
            try:
                agent.cgroup.freeze()
            except OSError as exc:
                log.warning("agent %s (%s): cannot freeze it with its paused parent: %s",
                            agent.name, agent.id, exc)
                agent.holds.clear()
        self._start_idle_clock(agent)

    def release(self, agent: Agent) -> None:
        """Thaw an agent that is being stopped: it must run to act on SIGTERM, and a v1
        frozen task takes no SIGKILL either. Its descendants stay as they are."""
        if agent.holds:
            agent.holds.clear()
            thaw([agent.cgroup])

    def forget(self, agent: Agent) -> None:
        """The agent has ended: drop its timers."""
        for timers in (self._deadlines, self._idle):
            timer = timers.pop(agent.id, None)
            if timer is not None:
                timer.cancel()
        self._active.pop(agent.id, None)
        agent.holds.clear()

    def touch(self, agent_id: str) -> None:
        """Activity of the agent's: its idle clock starts again."""
        if agent_id in self._active:
            self._active[agent_id] = self.service.kernel.loop.time()

    # -- timeouts --------------------------------------------------------------------

    def _on_call(self, call: Call) -> None:
        agent_id = call.identity.agent_id
        if agent_id is not None:
            self.touch(agent_id)

    def _after_call(self, call: Call, outcome: str, latency: float) -> None:
        self._on_call(call)

    def _start_idle_clock(self, agent: Agent) -> None:
        if agent.idle_timeout is None or agent.holds or not agent.running:
            return
        loop = self.service.kernel.loop
        self._active[agent.id] = loop.time()
        self._arm_idle(agent)

    def _stop_idle_clock(self, agent: Agent) -> None:
        timer = self._idle.pop(agent.id, None)
        if timer is not None:
            timer.cancel()
        self._active.pop(agent.id, None)

    def _arm_idle(self, agent: Agent) -> None:
        assert agent.idle_timeout is not None
        due = self._active[agent.id] + agent.idle_timeout
        self._idle[agent.id] = self.service.kernel.loop.call_at(due, self._check_idle, agent)

    def _check_idle(self, agent: Agent) -> None:
        # One timer per agent, moved on only when it fires: a syscall costs a dict store, not a timer.
        self._idle.pop(agent.id, None)
        if agent.id not in self._active or not agent.running:
            return
        assert agent.idle_timeout is not None
        if self.service.kernel.loop.time() >= self._active[agent.id] + agent.idle_timeout:
            self._expire(agent, "idle_timeout")
        else:
            self._arm_idle(agent)

    def _expire(self, agent: Agent, reason: str) -> None:
        if reason == "timeout":
            self._deadlines.pop(agent.id, None)
        if not agent.running:
            return
        limit = agent.timeout if reason == "timeout" else agent.idle_timeout
        log.info("agent %s (%s) reached its %s (%gs): stopping it", agent.name, agent.id, reason, limit)
        self.service._terminate(agent, self.service.settings.kill_grace, reason)


def freezer_missing(service: ProcessService) -> str:
    """Why the kernel's cgroup driver cannot freeze (for errors and the docs)."""
    driver = service.driver
    if isinstance(driver, NoDriver):
        return f"no cgroups ({driver.reason})"
    if isinstance(driver, V1Driver):
        return "the cgroup v1 freezer hierarchy is not mounted (or not delegated to this kernel)"
    return "cgroup.freeze is missing from the kernel's cgroup v2 subtree (Linux 5.2 or later has it)"
