"""The ``supervisor`` service: restarts agents that end, per the policy in their SPAWN request.

It owns no syscalls. The process service checks SPAWN's ``restart`` with the rest of
the request and keeps the policy on the agent's row; this service listens for agents
ending on ``kernel.events``, and spawns the same request again through the process
service after the backoff.
It publishes ``agent.restarted`` for each restart and ``agent.given_up`` when it
gives up (too many restarts in the window, or the restart itself failed).
A KILL of the agent, by name or id, cancels a restart that is waiting, as does a START.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AgentOSError, Unavailable
from ..kernel.syscalls import Call, Handler
from ..processes.agent import qualified
from ..protocol import Op, op_name
from ..protocol.lifecycle import SELF_ENDED_TOPICS, Status, Topic
from .policy import RestartHistory

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..processes.agent import Agent
    from ..processes.service import ProcessService

log = logging.getLogger("agentos.supervision")


class SupervisorService:
    """Restart policies enforced by the kernel, with exponential backoff and escalation to failed."""

    name = "supervisor"

    def __init__(self, kernel: Kernel, processes: ProcessService) -> None:
        self.kernel = kernel
        #: Whose agents it restarts, and through which it spawns them again.
        self.processes = processes
        #: Restart histories by agent name, while the agent keeps being restarted.
        self.histories: dict[str, RestartHistory] = {}
        #: Restarts waiting for their backoff, by agent name.
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        self._restarting: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Any] = []
        self._stopping = False

    # -- service lifecycle ---------------------------------------------------------

    def syscalls(self) -> Mapping[Op, Handler]:
        return {}

    async def start(self) -> None:
        self.kernel.add_observer(self._after_call, ops=(Op.KILL, Op.START))
        self._unsubscribe = [self.kernel.events.subscribe(topic, self._on_ended) for topic in SELF_ENDED_TOPICS]
        self._unsubscribe.append(self.kernel.events.subscribe(Topic.KILLED, self._on_killed))

    async def stop(self) -> None:
        self._stopping = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        if self._restarting:
            await asyncio.gather(*self._restarting, return_exceptions=True)

    def capabilities(self) -> Mapping[str, Any]:
        return {"policies": ["never", "on-failure", "always"], "restarting": sorted(self._waiting)}

    # -- hooks -----------------------------------------------------------------------

    def _after_call(self, call: Call, outcome: str, latency: float) -> None:
        """A successful KILL of an agent waiting to be restarted cancels the restart; so does a
        START (``agentos start``), which has already started it."""
        if outcome != "ok" or not self._waiting:
            return
        try:
            agent: Agent | None = self.processes.lookup(call.identity, call.args())
        except AgentOSError:
            agent = None
        name = agent.qualified_name if agent is not None else None
        timer = self._waiting.pop(name, None) if name is not None else None
        if timer is not None:
            timer.cancel()
            self.histories.pop(name, None)  # type: ignore[arg-type]
            log.info("agent %s: restart cancelled by %s", name, op_name(call.op))

    def _on_killed(self, topic: str, event: dict[str, Any]) -> None:
        self.histories.pop(qualified(event.get("project"), event["name"]), None)

    def _on_ended(self, topic: str, event: dict[str, Any]) -> None:
        # Decided once this event has reached every listener, so nobody sees agent.given_up before it.
        self.kernel.loop.call_soon(self._decide, event)

    def _decide(self, event: dict[str, Any]) -> None:
        if self._stopping or self.kernel.shutting_down:
            return
        agent = self._agent(event["id"])
        if agent is None:
            return
        policy = agent.restart
        if not policy.restarts_after(event["status"]):
            self.histories.pop(agent.qualified_name, None)
            return
        history = self.histories.get(agent.qualified_name)
        if history is None or history.policy != policy:
            history = self.histories[agent.qualified_name] = RestartHistory(policy)
        delay = history.next_delay(self.kernel.loop.time())
        if delay is None:
            self._give_up(agent, f"ended ({event['status']}) after {policy.max_restarts} restart(s) "
                          f"within {policy.window:g}s", status=event["status"])
            return
        log.info("agent %s (%s) %s: restarting in %gs (restart %d within %gs)", agent.name, agent.id,
                 event["status"], delay, history.recent, policy.window)
        self._waiting[agent.qualified_name] = self.kernel.loop.call_later(delay, self._start_restart, agent, delay)

    # -- restarting ------------------------------------------------------------------

    def _start_restart(self, agent: Agent, delay: float) -> None:
        self._waiting.pop(agent.qualified_name, None)
        if self.kernel.shutting_down:
            return
        task = self.kernel.loop.create_task(self._restart(agent, delay))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart(self, agent: Agent, delay: float) -> None:
        history = self.histories.get(agent.qualified_name)
        if agent.spawner is None:
            self._give_up(agent, "could not be restarted: the process table does not say who spawned it")
            return
        def announce(restarted: Agent) -> None:
            # Before its row is committed: the new agent may already be ending, and its end
            # must come after its restart in every listener's stream.
            restarted.restarts = agent.restarts + 1
            log.info("agent %s restarted as %s", agent.name, restarted.id)
            self.kernel.events.publish(Topic.RESTARTED, {
                "id": restarted.id, "name": agent.name, "project": agent.project, "pid": restarted.pid,
                "previous_id": agent.id,
                "restarts": history.total if history is not None else 1, "delay": delay})

        try:
            await self.processes.spawn_as(agent.spawner, agent.request, started=announce)
        except AgentOSError as exc:
            if isinstance(exc, Unavailable) and exc.details.get("status") == Status.KILLED:
                # KILLed while it waited for a cluster node: stopped on purpose, not given up on.
                self.histories.pop(agent.qualified_name, None)
                log.info("agent %s: restart cancelled by KILL while it waited for a node", agent.qualified_name)
                return
            self._give_up(agent, f"could not be restarted: {exc}")

    def _give_up(self, agent: Agent, reason: str, **details: Any) -> None:
        history = self.histories.pop(agent.qualified_name, None)
        # LIST shows the agent failed even when its last run ended cleanly (policy always).
        agent.status = Status.FAILED
        # And the next kernel does not bring it back as a restart still owed.
        self.processes.ledger.ended(agent, gave_up=True)
        log.warning("agent %s (%s) failed: %s", agent.name, agent.id, reason)
        self.kernel.events.publish(Topic.GIVEN_UP, {
            "id": agent.id, "name": agent.name, "project": agent.project, "reason": reason,
            "restarts": history.total if history is not None else 0, **details})

    # -- helpers ---------------------------------------------------------------------

    def _agent(self, agent_id: Any) -> Agent | None:
        """The process table's row for ``agent_id``, if it still holds one."""
        if not isinstance(agent_id, str):
            return None
        try:
            return self.processes.table.find({"id": agent_id})
        except AgentOSError:
            return None
