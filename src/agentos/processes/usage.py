"""Running agents' cgroup usage as LIST shows it: read in a worker thread, kept with its age.

A LIST of thousands of agents must not read thousands of control files on the event loop
(on cgroup v1, six files an agent). LIST asks ``refresh`` for the agents of its page: those
read longer ago than ``oldest`` are read again, in one batch on a worker thread, while the
loop serves everyone else; the rest are answered from here. Each entry says how old it is
(``usage_age``), so a reader can tell a figure of a moment ago from a fresh one.

``oldest`` is ``MAX_AGE``, or more where reading every running agent's usage takes longer
than ``MAX_AGE / SHARE``: with thousands of agents one LIST would otherwise outlast the
readings it made, and every LIST would read them all again, a core busy for as long as
someone lists (the 20x of sandboxed agents over plain ones in bench_scale at 4,900).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from ..cgroups import AgentCgroup, CgroupStats
from .agent import Agent

#: Usage read this recently (seconds) is answered as it is...
MAX_AGE = 1.0
#: ...or, where reading every running agent's takes longer than MAX_AGE / SHARE, usage as old
#: as SHARE times that: LISTs back to back then spend at most 1/SHARE of their time reading.
SHARE = 2.0


class UsageCache:
    """The last usage read of each running agent, and when (``clock``: ``time.monotonic``)."""

    def __init__(self, running: Callable[[], int], max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: How many agents run (all of whose usage a LIST may read).
        self._running = running
        self.max_age = max_age
        self._clock = clock
        self._read: dict[str, tuple[CgroupStats, float]] = {}
        #: The batch being read, by agent id: a second LIST waits for it instead of reading again.
        self._reading: dict[str, asyncio.Future[None]] = {}
        #: Seconds spent reading and agents read, recent batches weighing most.
        self._spent = 0.0
        self._count = 0.0

    def __len__(self) -> int:
        return len(self._read)

    @property
    def oldest(self) -> float:
        """How old (seconds) a reading may be and still be answered."""
        per_agent = self._spent / self._count if self._count else 0.0
        return max(self.max_age, SHARE * per_agent * self._running())

    async def refresh(self, agents: Sequence[Agent]) -> None:
        """Read again, off the loop, the usage of those ``agents`` read longer than ``oldest`` ago."""
        now = self._clock()
        oldest = self.oldest
        stale: list[Agent] = []
        waits: set[asyncio.Future[None]] = set()
        for agent in agents:
            if not agent.running:
                continue
            pending = self._reading.get(agent.id)
            if pending is not None:
                waits.add(pending)
                continue
            entry = self._read.get(agent.id)
            if entry is None or now - entry[1] > oldest:
                stale.append(agent)
        if stale:
            waits.add(asyncio.ensure_future(self._read_timed(stale)))
        if waits:
            await asyncio.gather(*waits)

    async def _read_timed(self, agents: list[Agent]) -> None:
        """``_read_batch``, its cost kept: the wall time, so a busy box reads less often."""
        started = self._clock()
        await self._read_batch(agents)
        self._spent = self._spent / 2 + (self._clock() - started)
        self._count = self._count / 2 + len(agents)

    async def _read_batch(self, agents: list[Agent]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        for agent in agents:
            self._reading[agent.id] = done
        try:
            # A placed agent's figures come from its node, asked at the same time.
            local = [agent for agent in agents if agent.remote is None]
            placed = [agent for agent in agents if agent.remote is not None]
            remote = (asyncio.ensure_future(placed[0].remote.service.read_stats([a.remote for a in placed]))
                      if placed else None)
            stats = dict(zip((a.id for a in local),
                             await loop.run_in_executor(None, _read_all, [a.cgroup for a in local])))
            if remote is not None:
                stats.update(zip((a.id for a in placed), await remote))
            at = self._clock()
            for agent in agents:
                if agent.running:  # one that ended meanwhile has its final usage
                    self._read[agent.id] = (stats[agent.id], at)
        finally:
            for agent in agents:
                self._reading.pop(agent.id, None)
            done.set_result(None)

    def usage(self, agent: Agent) -> tuple[CgroupStats, float | None]:
        """What LIST shows of ``agent``: its final usage once ended (age None), else the last
        read and its age in seconds (empty and None if never read)."""
        if agent.final_usage is not None:
            return agent.final_usage, None
        entry = self._read.get(agent.id)
        if entry is None:
            return CgroupStats(), None
        return entry[0], round(self._clock() - entry[1], 3)

    def forget(self, agent_id: str) -> None:
        """The agent ended: its final usage is on the agent from now on."""
        self._read.pop(agent_id, None)


def _read_all(cgroups: list[AgentCgroup]) -> list[CgroupStats]:
    return [cgroup.stats() for cgroup in cgroups]
