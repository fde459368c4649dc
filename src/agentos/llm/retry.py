"""Retries with exponential backoff and jitter that honour the server's requested delay.

A call waiting to retry holds nothing: the ``Gate`` it passes through hands out
a scheduler slot for one attempt at a time, and keeps the model's rate limit
(the delay its server asked for), so every call to that model waits it out
without a slot while calls to other models go ahead.

A call's ``Deadline`` bounds all of it: queueing for the slot and each attempt run
within it, and a wait that would outlast it is not started. An endpoint that
cannot be connected to is retried only ``connect_attempts`` times, quickly.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..observability import notes
from .deadline import Deadline
from .errors import ConnectFailed, ErrorKind, LLMError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``base`` is small in tests, ~1 s in production."""

    max_attempts: int = 5
    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    #: Up to this fraction of the computed delay is added at random.
    jitter: float = 0.5
    #: Total time spent waiting between attempts; a server delay beyond it is not waited for.
    max_wait: float = 120.0
    #: Attempts, the first included, that may fail to connect (refused, DNS, unreachable).
    connect_attempts: int = 3
    #: First backoff after a failed connect: 3 attempts take well under a second.
    connect_backoff: float = 0.15

    def backoff(self, attempt: int, base: float | None = None) -> float:
        """Delay before attempt ``attempt + 1`` (``attempt`` counts from 1), without server advice."""
        delay = min(self.max_delay, (self.base if base is None else base) * self.factor ** (attempt - 1))
        return delay + random.uniform(0, self.jitter * delay)

    def delay_for(self, error: LLMError, attempt: int) -> float:
        """The server's delay when it sent one (never less), else the backoff."""
        delay = self.backoff(attempt)
        return delay if error.retry_after is None else max(delay, error.retry_after)


class Gate(Protocol):
    """What one call passes through before each attempt: its model's rate limit, then a slot."""

    def hold(self) -> float:
        """Seconds before the model may be called again (0 when it may be now)."""

    def limited(self, delay: float) -> None:
        """The model's server asked for ``delay`` seconds without calls."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Held for exactly one attempt."""


class _Open:
    """No rate limit, no scheduler: a provider used on its own (tests, tools)."""

    def hold(self) -> float:
        return 0.0

    def limited(self, delay: float) -> None:
        pass

    def slot(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()


#: The gate of a call nothing schedules.
UNGATED: Gate = _Open()


async def with_retries(attempt_fn: Callable[[int], Awaitable[T]], policy: RetryPolicy,
                       on_retry: Callable[[LLMError, float], None] | None = None,
                       gate: Gate = UNGATED, deadline: Deadline | None = None) -> T:
    """Run ``attempt_fn(attempt)`` until it succeeds, fails for good, or the policy is spent.

    Only ``LLMError(retryable=True)`` is retried; anything else propagates at once.
    The last error is raised as is, so a 429 still reports its ``retry_after``.
    Each attempt holds ``gate.slot()``; waiting (backoff, the model's rate limit) holds
    none and counts against ``policy.max_wait``. With a ``deadline``, queueing for the slot
    and the attempt run within it (``deadline_exceeded`` when it passes), and a wait it
    would not outlive is not started: the last error (or ``rate_limited``) is raised at once.
    """
    waited = 0.0
    attempt = 1
    unconnected = 0
    last: LLMError | None = None
    while True:
        hold = gate.hold()
        if hold > 0:
            if waited + hold > policy.max_wait or (deadline is not None and not deadline.allows(hold)):
                raise LLMError(
                    ErrorKind.RATE_LIMITED, f"the model is rate limited by its server for another "
                    f"{hold:.1f}s, longer than this call may wait (retry.max_wait, its deadline)",
                    retry_after=hold)
            notes.event("gen_ai.wait", {"agentos.wait_s": hold, "agentos.reason": "rate_limited"})
            waited += await _pause(hold)
            continue
        async with nullcontext() if deadline is None else deadline.within(), gate.slot():
            if gate.hold() > 0:
                continue  # limited while this call queued for the slot: wait without it
            try:
                return await attempt_fn(attempt)
            except LLMError as error:
                last = error
                if error.retry_after is not None:
                    # Before the slot goes on, perhaps to a call for this same model.
                    gate.limited(error.retry_after)
        # Only a failed attempt gets here (success returns, a limit seen in the slot continues).
        assert last is not None
        if not last.retryable or attempt >= policy.max_attempts:
            raise last
        if isinstance(last, ConnectFailed):
            unconnected += 1
            if unconnected >= policy.connect_attempts:
                raise last
            delay = policy.backoff(unconnected, policy.connect_backoff)
        else:
            delay = policy.delay_for(last, attempt)
        if waited + delay > policy.max_wait or (deadline is not None and not deadline.allows(delay)):
            raise last
        if on_retry is not None:
            on_retry(last, delay)
        notes.event("gen_ai.retry", {"error.type": last.kind.value, "agentos.attempt": attempt,
                                     "agentos.wait_s": delay})
        waited += await _pause(delay)
        attempt += 1


async def _pause(seconds: float) -> float:
    """Sleep, and say how long it really took."""
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return time.monotonic() - started
