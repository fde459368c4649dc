"""The agent table: lookup by id or name, the parent/child tree, bounded history."""
from __future__ import annotations

from collections.abc import Callable, Iterator
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
        """Main pid -> id of every running agent on this host (a placed agent's pid is its node's)."""
        return {a.pid: a.id for a in self._agents.values() if a.running and a.remote is None}

    def check_name_free(self, name: str, project: str | None = None) -> None:
        """Names are unique among the running agents of one project (and among those of none)."""
        for agent in self._agents.values():
            if agent.running and agent.name == name and agent.project == project:
                raise AlreadyExists(f"an agent named {agent.qualified_name!r} is already running "
                                    f"(id {agent.id})", id=agent.id, name=name, project=project)

    def add(self, agent: Agent) -> None:
        self._agents[agent.id] = agent

    def prune(self) -> list[Agent]:
        """Forget (and return) the oldest ended agents past ``keep_ended``."""
        ended = [a for a in self._agents.values() if not a.running]
        forgotten = ended[: max(0, len(ended) - self.keep_ended)]
        for old in forgotten:
            del self._agents[old.id]
        return forgotten

    def find(self, args: dict[str, Any], project: str | None = None,
             visible: Callable[[Agent], bool] | None = None) -> Agent:
        """The agent ``{"id": ...}`` or ``{"name": ...}`` names (by name: the running one, else the latest).

        ``project/name`` names it in that project. A bare name means the caller's ``project``'s
        agent (None: the agents of no project) if there is one, else the one agent of that name
        in any other project, which must be a single project's: two teams' ``runner`` is
        ambiguous, not the newer one. Only agents ``visible`` to the caller count there, so a
        name never reveals, nor is made ambiguous by, what the caller may not see.
        """
        agent_id, name = args.get("id"), args.get("name")
        if agent_id is not None:
            if not isinstance(agent_id, str):
                raise InvalidArgument(f"id must be a string, got {type(agent_id).__name__}")
            agent = self._agents.get(agent_id)
            if agent is None:
                raise NotFound(f"no agent with id {agent_id!r}", id=agent_id)
            if name is not None and name not in (agent.name, agent.qualified_name):
                raise InvalidArgument(f"agent {agent_id!r} is named {agent.qualified_name!r}, not {name!r}")
            return agent
        if name is None:
            raise InvalidArgument("give the agent's id or name")
        if not isinstance(name, str):
            raise InvalidArgument(f"name must be a string, got {type(name).__name__}")
        wanted, _, bare = name.rpartition("/")
        matches = [a for a in self._agents.values() if a.name == bare]
        if wanted:
            matches = [a for a in matches if a.project == wanted]
        elif any(a.project == project for a in matches):
            matches = [a for a in matches if a.project == project]
        else:
            matches = [a for a in matches if visible is None or visible(a)]
            # Running agents decide: another team's ended agent of that name is history, not a rival.
            projects = sorted({a.project or "" for a in [a for a in matches if a.running] or matches})
            matches = [a for a in matches if (a.project or "") in projects]
            if len(projects) > 1:
                listed = ", ".join(p or "(none)" for p in projects)
                raise InvalidArgument(f"{name!r} names agents of {len(projects)} projects ({listed}): "
                                      f"say which, as PROJECT/{name}", field="name", projects=projects)
        if not matches:
            raise NotFound(f"no agent named {name!r}", name=name)
        return self._current(matches)

    def latest(self, name: str, project: str | None) -> Agent | None:
        """The current process of the agent ``name`` of ``project``: the running one, else the latest."""
        matches = [a for a in self._agents.values() if a.name == name and a.project == project]
        return self._current(matches) if matches else None

    @staticmethod
    def _current(matches: list[Agent]) -> Agent:
        running = [a for a in matches if a.running]
        return running[0] if running else max(matches, key=lambda a: a.started_at)

    def children(self, agent: Agent) -> list[Agent]:
        return [a for a in self._agents.values() if a.parent == agent.id]
