"""Fair scheduling: global limit, round robin among agents, weights, cancellation."""
from __future__ import annotations

import asyncio

import pytest

from agentos.llm.scheduler import FairScheduler


async def _hold(scheduler: FairScheduler, agent: str, order: list[str], release: asyncio.Event,
                weight: int = 1) -> None:
    await scheduler.acquire(agent, weight)
    try:
        order.append(agent)
        await release.wait()
    finally:
        scheduler.release(agent)


async def _drain(scheduler: FairScheduler, tasks: list[asyncio.Task], release: asyncio.Event) -> None:
    release.set()
    await asyncio.gather(*tasks)
    assert scheduler.in_flight == 0 and scheduler.queued() == 0


def test_global_limit_is_never_exceeded() -> None:
    async def main() -> int:
        scheduler = FairScheduler(3)
        peak = 0

        async def work(i: int) -> None:
            nonlocal peak
            await scheduler.acquire(f"agent-{i % 4}")
            peak = max(peak, scheduler.in_flight)
            await asyncio.sleep(0)
            scheduler.release(f"agent-{i % 4}")
        await asyncio.gather(*(work(i) for i in range(40)))
        assert scheduler.in_flight == 0
        return peak

    assert asyncio.run(main()) == 3


def test_a_greedy_agent_cannot_starve_another() -> None:
    async def main() -> list[str]:
        scheduler = FairScheduler(2)
        order: list[str] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(_hold(scheduler, "greedy", order, release)) for _ in range(50)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(_hold(scheduler, "polite", order, release)))
        await asyncio.sleep(0)
        assert scheduler.queued("greedy") == 48 and scheduler.queued("polite") == 1
        # Let calls finish one at a time and watch who gets each freed slot.
        release.set()
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(main())
    # Two greedy calls held the slots; the very next turns alternate, so polite is 4th at worst.
    assert order.index("polite") <= 3


def test_weights_give_proportional_turns() -> None:
    async def main() -> list[str]:
        scheduler = FairScheduler(1)
        order: list[str] = []
        blocker = asyncio.Event()
        first = asyncio.create_task(_hold(scheduler, "boot", order, blocker))
        await asyncio.sleep(0)
        gate = asyncio.Event()
        gate.set()
        tasks = [asyncio.create_task(_hold(scheduler, "heavy", order, gate, weight=3)) for _ in range(6)]
        tasks += [asyncio.create_task(_hold(scheduler, "light", order, gate)) for _ in range(6)]
        await asyncio.sleep(0)
        blocker.set()
        await asyncio.gather(first, *tasks)
        return order[1:]

    order = asyncio.run(main())
    assert order[:8] == ["heavy"] * 3 + ["light"] + ["heavy"] * 3 + ["light"]


def test_cancelling_a_waiting_call_leaves_the_queue_clean() -> None:
    async def main() -> None:
        scheduler = FairScheduler(1)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(scheduler, "a", order, release))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(_hold(scheduler, "b", order, release))
        await asyncio.sleep(0)
        assert scheduler.queued("b") == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert scheduler.queued() == 0
        await _drain(scheduler, [holder], release)
        assert order == ["a"]

    asyncio.run(main())


def test_cancel_right_after_the_grant_hands_the_slot_on() -> None:
    async def main() -> None:
        scheduler = FairScheduler(1)
        order: list[str] = []
        release = asyncio.Event()
        await scheduler.acquire("a")
        granted_then_cancelled = asyncio.create_task(_hold(scheduler, "b", order, release))
        third = asyncio.create_task(_hold(scheduler, "c", order, release))
        await asyncio.sleep(0)
        scheduler.release("a")  # grants b's future ...
        granted_then_cancelled.cancel()  # ... but b is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await granted_then_cancelled
        await asyncio.sleep(0)
        assert order == ["c"] and scheduler.running("c") == 1
        await _drain(scheduler, [third], release)

    asyncio.run(main())


def test_a_slot_freed_while_cancelled_waiters_are_still_queued_skips_them() -> None:
    async def main() -> None:
        scheduler = FairScheduler(1)
        order: list[str] = []
        release = asyncio.Event()
        await scheduler.acquire("a")
        doomed = [asyncio.create_task(_hold(scheduler, "a", order, release)) for _ in range(2)]
        survivor = asyncio.create_task(_hold(scheduler, "b", order, release))
        await asyncio.sleep(0)
        for task in doomed:
            task.cancel()  # their futures are cancelled now, their cleanup runs later
        scheduler.release("a")
        await asyncio.gather(*doomed, return_exceptions=True)
        await asyncio.sleep(0)
        assert order == ["b"]
        await _drain(scheduler, [survivor], release)

    asyncio.run(main())
