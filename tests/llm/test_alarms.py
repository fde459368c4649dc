"""``deadline.Alarms``: the timers of every THINK's deadline and HTTP exchange, off asyncio's heap.

Order and cancellation are checked, never how late an alarm runs.
"""
from __future__ import annotations

import asyncio
from typing import Any

from agentos.llm.deadline import Alarms


async def _until(done: asyncio.Event) -> None:
    await asyncio.wait_for(done.wait(), 30)  # bounds a broken run only


def test_alarms_run_in_order_of_their_instants_and_cancelled_ones_never() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        alarms = Alarms(loop)
        ran: list[str] = []
        done = asyncio.Event()
        now = loop.time()
        alarms.at(now + 0.06, lambda: ran.append("third"))
        cancelled = alarms.at(now + 0.02, lambda: ran.append("cancelled"))
        # Earlier than the loop timer the alarms hold: it must move up.
        alarms.at(now + 0.01, lambda: ran.append("first"))
        alarms.at(now + 0.04, lambda: ran.append("second"))
        alarms.at(now + 0.08, done.set)
        alarms.cancel(cancelled)
        await _until(done)
        return ran

    assert asyncio.run(main()) == ["first", "second", "third"]


def test_cancelled_alarms_do_not_pile_up() -> None:
    async def main() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        alarms = Alarms(loop)
        done = asyncio.Event()
        # What a kernel does all day: a far alarm per call, cancelled as the call ends.
        for _ in range(10_000):
            alarms.cancel(alarms.at(loop.time() + 120, done.set))
        alarms.at(loop.time() + 0.01, done.set)
        await _until(done)
        return len(alarms._heap), done.is_set()

    size, fired = asyncio.run(main())
    assert fired
    assert size <= 130  # compacted whenever over half of it is cancelled


def test_a_failing_alarm_is_reported_and_the_others_still_run() -> None:
    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        alarms = Alarms(loop)
        ran: list[str] = []
        done = asyncio.Event()
        now = loop.time()

        def fail() -> None:
            raise RuntimeError("boom")

        alarms.at(now + 0.01, fail)
        alarms.at(now + 0.01, lambda: ran.append("same instant"))
        alarms.at(now + 0.03, lambda: ran.append("later"))
        alarms.at(now + 0.05, done.set)
        await _until(done)
        return ran, reported

    ran, reported = asyncio.run(main())
    assert ran == ["same instant", "later"]
    assert [type(context["exception"]) for context in reported] == [RuntimeError]
