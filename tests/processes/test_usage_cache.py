"""UsageCache: LIST's usage figures, read off the loop and answered with their age. A reading
younger than ``oldest`` is answered as it is; ``oldest`` is MAX_AGE, or SHARE times what reading
every running agent's usage takes, so LISTs of thousands back to back do not read all the time.
Time is a fake clock the test moves (each reading moves it too, as reading takes time)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agentos.cgroups import CgroupStats
from agentos.processes.usage import MAX_AGE, SHARE, UsageCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCgroup:
    clock: Clock
    #: What one reading costs, on the fake clock.
    cost: float = 0.0
    reads: int = 0

    def stats(self) -> CgroupStats:
        self.reads += 1
        self.clock.now += self.cost
        return CgroupStats(pids_current=self.reads)


@dataclass(eq=False)
class FakeAgent:
    id: str
    cgroup: FakeCgroup
    running: bool = True
    remote: None = None
    final_usage: CgroupStats | None = None


def _agents(clock: Clock, count: int, cost: float = 0.0) -> list[Any]:
    """Stand-ins for agents: what UsageCache reads of one."""
    return [FakeAgent(f"a{n}", FakeCgroup(clock, cost)) for n in range(count)]


def test_a_fresh_reading_is_answered_with_its_age_and_a_stale_one_read_again() -> None:
    clock = Clock()
    [agent] = _agents(clock, 1)
    cache = UsageCache(lambda: 1, clock=clock)
    asyncio.run(cache.refresh([agent]))
    assert cache.usage(agent) == (CgroupStats(pids_current=1), 0.0)
    clock.now += MAX_AGE / 2
    asyncio.run(cache.refresh([agent]))
    assert agent.cgroup.reads == 1
    assert cache.usage(agent) == (CgroupStats(pids_current=1), MAX_AGE / 2)
    clock.now += MAX_AGE
    asyncio.run(cache.refresh([agent]))
    assert agent.cgroup.reads == 2
    assert cache.usage(agent) == (CgroupStats(pids_current=2), 0.0)


def test_readings_may_age_as_reading_them_all_takes_longer() -> None:
    clock = Clock()
    agents = _agents(clock, 100, cost=0.01)  # a second to read them all
    cache = UsageCache(lambda: len(agents), clock=clock)
    assert cache.oldest == MAX_AGE  # nothing read yet: nothing known of the cost
    asyncio.run(cache.refresh(agents))
    assert abs(cache.oldest - SHARE * 1.0) < 1e-6
    clock.now += SHARE * 1.0 - 0.1  # older than MAX_AGE, younger than oldest
    asyncio.run(cache.refresh(agents))
    assert {agent.cgroup.reads for agent in agents} == {1}
    age = cache.usage(agents[-1])[1]
    assert age is not None and age > MAX_AGE
    clock.now += 0.2
    asyncio.run(cache.refresh(agents))
    assert {agent.cgroup.reads for agent in agents} == {2}


def test_an_ended_agent_is_not_read_and_shows_its_final_usage_without_age() -> None:
    clock = Clock()
    [agent] = _agents(clock, 1)
    agent.running = False
    agent.final_usage = CgroupStats(memory_peak=7)
    cache = UsageCache(lambda: 0, clock=clock)
    asyncio.run(cache.refresh([agent]))
    assert agent.cgroup.reads == 0
    assert cache.usage(agent) == (CgroupStats(memory_peak=7), None)
