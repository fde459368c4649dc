"""Fair scheduling: global limit, fair shares from the first call, weights, cancellation.

No clock: each call holds its slot until the test finishes it, and the loop is
run until nothing more can happen.
"""
from __future__ import annotations

import asyncio

import pytest

from agentos.llm.scheduler import FairScheduler


class Calls:
    """Calls through one scheduler, each holding its slot until the test finishes it."""

    def __init__(self, scheduler: FairScheduler) -> None:
        self.scheduler = scheduler
        #: Agents in the order their calls got a slot.
        self.started: list[str] = []
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._holding: dict[str, list[asyncio.Future[None]]] = {}

    def send(self, agent: str, count: int = 1, weight: int = 1) -> list[asyncio.Task[None]]:
        """``count`` calls of ``agent``; they reach the scheduler in the loop's next turn."""
        tasks = [asyncio.create_task(self._call(agent, weight)) for _ in range(count)]
        self.tasks.setdefault(agent, []).extend(tasks)
        return tasks

    def finish(self, agent: str) -> None:
        """The oldest running call of ``agent`` ends."""
        self._holding[agent].pop(0).set_result(None)

    def running(self) -> dict[str, int]:
        return {agent: n for agent in self.tasks if (n := self.scheduler.running(agent))}

    async def drain(self) -> None:
        for agent in self.tasks:
            self._holding.setdefault(agent, [])
        while any(self._holding.values()):
            for holding in self._holding.values():
                while holding:
                    holding.pop().set_result(None)
            await settle()
        await asyncio.gather(*(t for tasks in self.tasks.values() for t in tasks),
                             return_exceptions=True)
        assert self.scheduler.in_flight == 0 and self.scheduler.queued() == 0

    async def _call(self, agent: str, weight: int) -> None:
        await self.scheduler.acquire(agent, weight)
        self.started.append(agent)
        done = asyncio.get_running_loop().create_future()
        holding = self._holding.setdefault(agent, [])
        holding.append(done)
        try:
            await done
        finally:
            if done.cancelled():  # the call was cancelled while running
                holding.remove(done)
            self.scheduler.release(agent)


async def settle() -> None:
    """Run the loop until every call that can make progress has (a handful of turns)."""
    for _ in range(8):
        await asyncio.sleep(0)


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
    # Two greedy calls held the slots; the first one to end hands its slot to polite.
    assert order.index("polite") == 2


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


def test_an_agent_alone_takes_every_free_slot() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("a", 10)
        await settle()
        assert calls.running() == {"a": 4} and calls.scheduler.queued("a") == 6
        await calls.drain()

    asyncio.run(main())


def test_agents_arriving_in_the_same_turn_share_the_free_slots() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("a", 1000)
        calls.send("b", 100)
        await settle()
        assert calls.running() == {"a": 2, "b": 2}
        await calls.drain()

    asyncio.run(main())


def test_one_call_in_the_same_turn_as_a_burst_starts_at_once() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("a", 1000)
        calls.send("b")
        await settle()
        assert calls.running() == {"a": 3, "b": 1}
        await calls.drain()

    asyncio.run(main())


def test_a_later_call_starts_at_the_first_freed_slot_not_after_the_burst() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("a", 1000)
        await settle()
        assert calls.running() == {"a": 4}  # slots were free and nobody else wanted them
        calls.send("b")
        await settle()
        calls.finish("a")
        await settle()
        # One of a's calls ended, and b's call took its slot ahead of a's other 995.
        assert calls.started[:5] == ["a"] * 4 + ["b"] and calls.scheduler.queued("a") == 996
        await calls.drain()

    asyncio.run(main())


def test_shares_even_out_as_calls_finish() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("a", 100)
        await settle()
        calls.send("b", 100)
        await settle()
        assert calls.running() == {"a": 4}
        for _ in range(2):
            calls.finish("a")
            await settle()
        assert calls.running() == {"a": 2, "b": 2}
        # From here on each freed slot goes back to the agent that freed it.
        for agent in ("a", "b", "b", "a"):
            calls.finish(agent)
            await settle()
            assert calls.running() == {"a": 2, "b": 2}
        assert calls.started[4:] == ["b", "b", "a", "b", "b", "a"]
        await calls.drain()

    asyncio.run(main())


def test_a_slot_freed_in_the_turn_calls_arrive_is_shared_among_them() -> None:
    async def main() -> None:
        scheduler = FairScheduler(2)
        calls = Calls(scheduler)
        await scheduler.acquire("a")  # a call outside the harness, ending in the next turn
        calls.send("a", 3)
        ended = asyncio.create_task(_release_now(scheduler, "a"))
        calls.send("b", 3)
        await settle()
        # a's waiting calls did not take the freed slot before b's calls had arrived.
        assert calls.running() == {"a": 1, "b": 1}
        await ended
        await calls.drain()

    asyncio.run(main())


async def _release_now(scheduler: FairScheduler, agent: str) -> None:
    scheduler.release(agent)


def test_weights_share_slots_in_proportion() -> None:
    async def main() -> None:
        calls = Calls(FairScheduler(4))
        calls.send("heavy", 50, weight=3)
        calls.send("light", 50)
        await settle()
        assert calls.running() == {"heavy": 3, "light": 1}
        for agent in ("light", "heavy", "heavy", "light"):
            calls.finish(agent)
            await settle()
            assert calls.running() == {"heavy": 3, "light": 1}
        await calls.drain()

    asyncio.run(main())


def test_calls_cancelled_before_the_hand_out_leave_their_share_to_others() -> None:
    async def main() -> None:
        scheduler = FairScheduler(4)
        calls = Calls(scheduler)
        calls.send("a", 10)
        doomed = calls.send("b", 10)
        await asyncio.sleep(0)  # every call has queued; the slots are handed out next turn
        assert scheduler.running("b") == 1 and scheduler.queued("b") == 9
        for task in doomed:
            task.cancel()
        await settle()
        assert calls.running() == {"a": 4} and scheduler.queued() == 6
        assert all(task.cancelled() for task in doomed)
        await calls.drain()

    asyncio.run(main())
