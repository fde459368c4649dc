"""A call waiting to retry holds no slot; a rate limit pauses its own model and nothing else."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.ratelimits import ModelGate, RateLimits, model_key
from agentos.llm.retry import RetryPolicy, with_retries
from agentos.llm.scheduler import FairScheduler

POLICY = RetryPolicy(max_attempts=5, base=0.01, max_delay=0.05, jitter=0.0, max_wait=300.0)


def _rate_limited(delay: float) -> LLMError:
    return LLMError(ErrorKind.RATE_LIMITED, "quota", status=429, retry_after=delay, retryable=True)


class Model:
    """A scripted model: each attempt takes the next outcome (an error, or 'ok'), in order."""

    def __init__(self, *outcomes: LLMError | str) -> None:
        self.outcomes = list(outcomes)
        self.log: list[str] = []
        #: Set while an attempt is inside; the test opens it to let the attempt answer.
        self.answer = asyncio.Event()
        self.answer.set()

    def attempt(self, name: str) -> Callable[[int], Awaitable[str]]:
        async def run(attempt: int) -> str:
            self.log.append(f"{name}#{attempt}")
            await self.answer.wait()
            outcome = self.outcomes.pop(0) if self.outcomes else "ok"
            if isinstance(outcome, LLMError):
                raise outcome
            return f"{name}: {outcome}"
        return run


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the test's own timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.005)


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_healthy_model_answers_while_the_limited_models_calls_wait_without_slots() -> None:
    async def main() -> None:
        scheduler, limits = FairScheduler(2), RateLimits()
        limited = Model(*[_rate_limited(60.0)] * 8)
        healthy = Model()
        flood = [asyncio.create_task(with_retries(
            limited.attempt(f"flood{i}"), POLICY,
            gate=limits.gate("limited", scheduler, "flooder"))) for i in range(8)]
        await _until(lambda: limits.hold("limited") > 0 and scheduler.in_flight == 0
                     and scheduler.queued() == 0)
        # Only the calls already holding both slots reached the model; the rest waited for
        # the pause without asking again, and none of the eight holds a slot while it waits.
        assert 1 <= len(limited.log) <= 2 and not any(task.done() for task in flood)
        answer = await with_retries(healthy.attempt("other"), POLICY,
                                    gate=limits.gate("healthy", scheduler, "bystander"))
        assert answer == "other: ok" and limits.hold("healthy") == 0
        assert scheduler.in_flight == 0 and not any(task.done() for task in flood)
        await _cancel(*flood)
        assert scheduler.in_flight == 0 and scheduler.queued() == 0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_calls_to_a_paused_model_wait_for_its_retry_time_then_all_succeed() -> None:
    async def main() -> None:
        clock = asyncio.get_running_loop().time
        scheduler, limits = FairScheduler(4), RateLimits(clock)
        model = Model(_rate_limited(0.2))
        first = asyncio.create_task(with_retries(model.attempt("first"), POLICY,
                                                 gate=limits.gate("m", scheduler, "a")))
        await _until(lambda: limits.hold("m") > 0)
        resume = limits._until["m"]
        sent_at: list[float] = []

        async def attempt(n: int) -> str:
            sent_at.append(clock())
            return await model.attempt("later")(n)
        later = [asyncio.create_task(with_retries(attempt, POLICY,
                                                  gate=limits.gate("m", scheduler, f"b{i}")))
                 for i in range(3)]
        assert await asyncio.gather(first, *later) == ["first: ok"] + ["later: ok"] * 3
        # The later calls never reached the model before the time its server asked for, and
        # used their first attempt then (the pause is not an attempt).
        assert len(sent_at) == 3 and min(sent_at) >= resume
        assert sorted(model.log) == ["first#1", "first#2", "later#1", "later#1", "later#1"]
        assert scheduler.in_flight == 0 and limits.hold("m") == 0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_pause_longer_than_the_call_may_wait_fails_at_once_without_a_request() -> None:
    async def main() -> None:
        scheduler, limits = FairScheduler(1), RateLimits()
        limits.limited("m", 900.0)
        model = Model()
        with pytest.raises(LLMError) as caught:
            await with_retries(model.attempt("x"), POLICY, gate=limits.gate("m", scheduler, "a"))
        assert caught.value.kind is ErrorKind.RATE_LIMITED and (caught.value.retry_after or 0) > 500
        assert model.log == [] and scheduler.in_flight == 0

    asyncio.run(main())


def test_a_call_that_gets_its_slot_after_its_model_was_paused_hands_the_slot_on() -> None:
    async def main() -> None:
        scheduler, limits = FairScheduler(1), RateLimits()
        model = Model(_rate_limited(60.0))
        model.answer.clear()
        first = asyncio.create_task(with_retries(model.attempt("first"), POLICY,
                                                 gate=limits.gate("m", scheduler, "a")))
        await _until(lambda: model.log == ["first#1"])
        queued = asyncio.create_task(with_retries(model.attempt("queued"), POLICY,
                                                  gate=limits.gate("m", scheduler, "b")))
        other = Model()
        bystander = asyncio.create_task(with_retries(
            other.attempt("bystander"), POLICY, gate=limits.gate("other", scheduler, "c")))
        await _until(lambda: scheduler.queued() == 2)
        model.answer.set()  # the first call's 429 pauses the model while "queued" waits a slot
        assert await bystander == "bystander: ok"
        assert model.log == ["first#1"] and not queued.done()
        assert scheduler.in_flight == 0 and scheduler.queued() == 0
        await _cancel(first, queued)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_retry_reenters_at_its_agents_turn_not_behind_a_backlog() -> None:
    async def main() -> list[str]:
        scheduler, limits = FairScheduler(1), RateLimits()
        order: list[str] = []
        release = asyncio.Event()

        async def greedy_call(attempt: int) -> str:
            order.append("greedy")
            await release.wait()
            return "ok"

        async def polite_call(attempt: int) -> str:
            order.append(f"polite#{attempt}")
            if attempt == 1:
                raise _rate_limited(0.05)
            return "ok"

        polite = asyncio.create_task(with_retries(polite_call, POLICY,
                                                  gate=limits.gate("p", scheduler, "polite")))
        await _until(lambda: order == ["polite#1"] and scheduler.in_flight == 0)
        backlog = [asyncio.create_task(with_retries(greedy_call, POLICY,
                                                    gate=limits.gate("g", scheduler, "greedy")))
                   for _ in range(10)]
        # The retry queues behind the one greedy call holding the slot, not its whole backlog.
        await _until(lambda: scheduler.queued("polite") == 1)
        assert scheduler.queued("greedy") == 9 and scheduler.running("greedy") == 1
        release.set()
        await asyncio.gather(polite, *backlog)
        return order

    order = asyncio.run(asyncio.wait_for(main(), 30))
    # One greedy call held the slot and the ring gave greedy its one turn; then polite's.
    assert order.index("polite#2") <= 3, order


def test_cancelling_a_call_while_it_waits_to_retry_leaves_nothing_held() -> None:
    async def main() -> None:
        scheduler, limits = FairScheduler(1), RateLimits()
        model = Model(LLMError(ErrorKind.UNAVAILABLE, "busy", status=503, retryable=True))
        slow = RetryPolicy(max_attempts=3, base=60.0, jitter=0.0, max_wait=300.0)
        waiting = asyncio.create_task(with_retries(model.attempt("x"), slow,
                                                   gate=limits.gate("m", scheduler, "a")))
        await _until(lambda: model.log == ["x#1"] and scheduler.in_flight == 0)
        # A 503 without a server delay backs off this call only; the model is not paused.
        assert limits.hold("m") == 0
        assert await with_retries(Model().attempt("y"), POLICY,
                                  gate=limits.gate("m", scheduler, "b")) == "y: ok"
        await _cancel(waiting)
        assert scheduler.in_flight == 0 and scheduler.queued() == 0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_rate_limits_are_per_model_only_grow_and_are_forgotten_when_over() -> None:
    now = [100.0]
    limits = RateLimits(lambda: now[0])
    limits.limited("a", 10.0)
    limits.limited("a", 2.0)  # a shorter delay from a later answer does not shorten the pause
    assert limits.hold("a") == 10.0 and limits.hold("b") == 0.0
    limits.limited("b", 1.0)
    now[0] += 5.0
    assert limits.hold("a") == 5.0 and limits.hold("b") == 0.0
    limits.limited("c", 1.0)
    assert set(limits._until) == {"a", "c"}  # "b" is over and forgotten
    now[0] += 5.0
    assert limits.hold("a") == 0.0


def test_model_keys_are_per_endpoint_and_ignore_the_models_prefix() -> None:
    assert model_key("http://x/", "models/gemini-2.5-flash") == model_key("http://x", "gemini-2.5-flash")
    assert model_key("http://x", "m") != model_key("http://y", "m")
    assert model_key("http://x", "m") != model_key("http://x", "n")


def test_a_gate_releases_its_slot_when_the_attempt_fails() -> None:
    async def main() -> None:
        scheduler = FairScheduler(1)
        gate = ModelGate(RateLimits(), "m", scheduler, "a")
        with pytest.raises(RuntimeError):
            async with gate.slot():
                assert scheduler.running("a") == 1
                raise RuntimeError("boom")
        assert scheduler.in_flight == 0

    asyncio.run(main())
