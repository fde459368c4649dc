"""The agent table: lookup by id or name, the parent/child tree, bounded history."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import AlreadyExists, InvalidArgument, NotFound
from .agent import Agent


class AgentTable:
    """Every running agent, plus the most recent ended ones (up to ``keep_ended``)."""

    def __init__(self, keep_ended: int = 256) -> None:
        self.keep_ended = keep_ended
        self._agents: dict[str, Agent] = {}

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))

    def running(self) -> list[Agent]:
        return [a for a in self._agents.values() if a.running]

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def running_ids(self) -> set[str]:
        return {a.id for a in self._agents.values() if a.running}

    def running_pids(self) -> dict[int, str]:
        """Main pid -> id of every running agent."""
        return {a.pid: a.id for a in self._agents.values() if a.running}

    def check_name_free(self, name: str) -> None:
        for agent in self._agents.values():
            if agent.running and agent.name == name:
                raise AlreadyExists(f"an agent named {name!r} is already running (id {agent.id})",
                                    id=agent.id, name=name)

    def add(self, agent: Agent) -> None:
        self._agents[agent.id] = agent

    def prune(self) -> list[Agent]:
        """Forget (and return) the oldest ended agents past ``keep_ended``."""
        ended = [a for a in self._agents.values() if not a.running]
        forgotten = ended[: max(0, len(ended) - self.keep_ended)]
        for old in forgotten:
            del self._agents[old.id]
        return forgotten

    def find(self, args: dict[str, Any]) -> Agent:
        """The agent ``{"id": ...}`` or ``{"name": ...}`` names (by name: the running one, else the latest)."""
        agent_id, name = args.get("id"), args.get("name")
        if agent_id is not None:
            if not isinstance(agent_id, str):
                raise InvalidArgument(f"id must be a string, got {type(agent_id).__name__}")
            agent = self._agents.get(agent_id)
            if agent is None:
                raise NotFound(f"no agent with id {agent_id!r}", id=agent_id)
            if name is not None and agent.name != name:
                raise InvalidArgument(f"agent {agent_id!r} is named {agent.name!r}, not {name!r}")
            return agent
        if name is None:
            raise InvalidArgument("give the agent's id or name")
        if not isinstance(name, str):
            raise InvalidArgument(f"name must be a string, got {type(name).__name__}")
        matches = [a for a in self._agents.values() if a.name == name]
        if not matches:
            raise NotFound(f"no agent named {name!r}", name=name)
        running = [a for a in matches if a.running]
        return running[0] if running else max(matches, key=lambda a: a.started_at)

    def children(self, agent: Agent) -> list[Agent]:
        return [a for a in self._agents.values() if a.parent == agent.id]
