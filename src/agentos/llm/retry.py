"""Retries with exponential backoff and jitter that honour the server's requested delay."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import LLMError

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

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (``attempt`` counts from 1), without server advice."""
        delay = min(self.max_delay, self.base * self.factor ** (attempt - 1))
        return delay + random.uniform(0, self.jitter * delay)

    def delay_for(self, error: LLMError, attempt: int) -> float:
        """The server's delay when it sent one (never less), else the backoff."""
        delay = self.backoff(attempt)
        return delay if error.retry_after is None else max(delay, error.retry_after)


async def with_retries(attempt_fn: Callable[[int], Awaitable[T]], policy: RetryPolicy,
                       on_retry: Callable[[LLMError, float], None] | None = None) -> T:
    """Run ``attempt_fn(attempt)`` until it succeeds, fails for good, or the policy is spent.

    Only ``LLMError(retryable=True)`` is retried; anything else propagates at once.
    The last error is raised as is, so a 429 still reports its ``retry_after``.
    """
    waited = 0.0
    attempt = 1
    while True:
        try:
            return await attempt_fn(attempt)
        except LLMError as error:
            if not error.retryable or attempt >= policy.max_attempts:
                raise
            delay = policy.delay_for(error, attempt)
            if waited + delay > policy.max_wait:
                raise
            if on_retry is not None:
                on_retry(error, delay)
            started = time.monotonic()
            await asyncio.sleep(delay)
            waited += time.monotonic() - started
            attempt += 1

