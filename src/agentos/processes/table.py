"""The agent table: lookup by id or name, the parent/child tree, bounded history.

Every lookup a SPAWN, an end or a connection makes is indexed (by id, by running name, by
parent, by main pid): none of them costs more as agents accumulate. LIST walks the table
in the order agents were added, by position (``after``), so a page can be resumed after
the table changed: agents added later come after it, forgotten ones are simply gone.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Container, Iterator, KeysView, Mapping
from typing import Any

from ..errors import AlreadyExists, InvalidArgument, NotFound
from .agent import Agent, qualified


class AgentTable:
    """Every running agent, plus the most recent ended ones (up to ``keep_ended``)."""

    def __init__(self, keep_ended: int = 256) -> None:
        self.keep_ended = keep_ended
        self._agents: dict[str, Agent] = {}
        self._running: dict[str, Agent] = {}
        #: Ended agents in the order they ended: the oldest are forgotten first.
        self._ended: dict[str, Agent] = {}
        #: (project, name) of each running agent, and of each SPAWN of that name still starting.
        self._names: dict[tuple[str | None, str], Agent | None] = {}
        #: Name -> the agents of that name (any project, running or ended), oldest first.
        self._named: dict[str, dict[str, Agent]] = {}
        #: Parent id -> its children in the table.
        self._children: dict[str, dict[str, Agent]] = {}
        #: Main pid -> id of each running agent whose process is on this host.
        self._pids: dict[int, str] = {}
        #: Each agent's position (``add`` order) and the positions in order, for LIST's pages.
        self._position: dict[str, int] = {}
        self._positions: list[int] = []
        self._ordered: list[Agent] = []
        self._next = 1

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._ordered))

    def __len__(self) -> int:
        return len(self._agents)

    def sizes(self) -> dict[str, int]:
        """How many entries each index holds (all bounded by running + ``keep_ended``)."""
        return {"agents": len(self._agents), "running": len(self._running), "ended": len(self._ended),
                "names": len(self._names), "named": len(self._named), "parents": len(self._children),
                "pids": len(self._pids), "positions": len(self._positions)}

    def running(self) -> list[Agent]:
        return list(self._running.values())

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def running_ids(self) -> KeysView[str]:
        """Ids of the running agents (a live view)."""
        return self._running.keys()

    def running_pids(self) -> Mapping[int, str]:
        """Main pid -> id of every running agent on this host (a placed agent's pid is its node's)."""
        return self._pids

    def check_name_free(self, name: str, project: str | None = None) -> None:
        """Names are unique among the running agents of one project (and among those of none)."""
        if (project, name) not in self._names:
            return
        agent = self._names[(project, name)]
        if agent is None:
            raise AlreadyExists(f"an agent named {qualified(project, name)!r} is already starting",
                                name=name, project=project)
        raise AlreadyExists(f"an agent named {agent.qualified_name!r} is already running "
                            f"(id {agent.id})", id=agent.id, name=name, project=project)

    def reserve(self, name: str, project: str | None) -> None:
        """Hold ``name`` for a SPAWN until ``add`` (or ``release``): two SPAWNs of one name that
        overlap cannot both start."""
        self.check_name_free(name, project)
        self._names[(project, name)] = None

    def release(self, name: str, project: str | None) -> None:
        """Give up a reservation whose SPAWN failed (a running agent's name stays taken)."""
        if (project, name) in self._names and self._names[(project, name)] is None:
            del self._names[(project, name)]

    def add(self, agent: Agent) -> None:
        if agent.id in self._agents:
            raise ValueError(f"agent {agent.id} is already in the table")
        self._agents[agent.id] = agent
        self._named.setdefault(agent.name, {})[agent.id] = agent
        if agent.parent is not None:
            self._children.setdefault(agent.parent, {})[agent.id] = agent
        position, self._next = self._next, self._next + 1
        self._position[agent.id] = position
        self._positions.append(position)
        self._ordered.append(agent)
        if agent.running:
            self._running[agent.id] = agent
            self._names[(agent.project, agent.name)] = agent
            if agent.remote is None:
                self._pids[agent.pid] = agent.id
        else:
            self._ended[agent.id] = agent

    def ended(self, agent: Agent) -> None:
        """``agent`` (in the table) stopped running: its name is free, its history kept."""
        if self._running.pop(agent.id, None) is None:
            return
        if self._names.get((agent.project, agent.name)) is agent:
            del self._names[(agent.project, agent.name)]
        if self._pids.get(agent.pid) == agent.id:
            del self._pids[agent.pid]
        self._ended[agent.id] = agent

    def prune(self) -> list[Agent]:
        """Forget (and return) the oldest ended agents past ``keep_ended``."""
        forgotten: list[Agent] = []
        while len(self._ended) > self.keep_ended:
            oldest = next(iter(self._ended.values()))
            self._forget(oldest)
            forgotten.append(oldest)
        return forgotten

    def _forget(self, agent: Agent) -> None:
        del self._agents[agent.id]
        del self._ended[agent.id]
        _drop(self._named, agent.name, agent.id)
        if agent.parent is not None:
            _drop(self._children, agent.parent, agent.id)
        position = self._position.pop(agent.id)
        at = bisect.bisect_left(self._positions, position)
        del self._positions[at]
        del self._ordered[at]

    def page(self, after: int, count: int, name: str | None = None) -> list[tuple[int, Agent]]:
        """Up to ``count`` agents (only those called ``name``, if given) added after position
        ``after`` (0: from the first), in the order they were added, each with its position."""
        if name is not None:
            named = sorted((self._position[a.id], a) for a in self._named.get(name, {}).values())
            return [entry for entry in named if entry[0] > after][:count]
        start = bisect.bisect_right(self._positions, after)
        return list(zip(self._positions[start:start + count], self._ordered[start:start + count]))

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
        matches = list(self._named.get(bare, {}).values())
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
        matches = [a for a in self._named.get(name, {}).values() if a.project == project]
        return self._current(matches) if matches else None

    @staticmethod
    def _current(matches: list[Agent]) -> Agent:
        running = [a for a in matches if a.running]
        return running[0] if running else max(matches, key=lambda a: a.started_at)

    def children(self, agent: Agent) -> list[Agent]:
        return list(self._children.get(agent.id, {}).values())


class AnyOf(Container[str]):
    """Members of any of several containers, without copying them into one."""

    def __init__(self, *containers: Container[str]) -> None:
        self._containers = containers

    def __contains__(self, item: object) -> bool:
        return any(item in container for container in self._containers)


def _drop(index: dict[str, dict[str, Agent]], key: str, agent_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(agent_id, None)
        if not members:
            del index[key]
