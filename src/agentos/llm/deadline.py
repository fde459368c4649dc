"""One deadline per THINK, covering everything the call does until it answers.

It is fixed when the THINK arrives (its ``timeout``, else ``llm.deadline``) and
shared by whatever the call goes through: queueing for a scheduler slot, each
attempt, the backoff between attempts, a rate-limited model's pause, and a
fallback chain's next model. Those check ``left()`` before they wait and run
each attempt ``within()`` it, so retries can no longer add up past it.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .errors import ErrorKind, LLMError


@dataclass(frozen=True)
class Deadline:
    """A monotonic instant; ``seconds`` is the time it gave, for the error message."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        """Seconds until it passes; 0 once it has."""
        return max(0.0, self.at - time.monotonic())

    def allows(self, wait: float) -> bool:
        """Whether waiting ``wait`` seconds still leaves time to do something after."""
        return wait < self.left()

    def exceeded(self) -> LLMError:
        """The error a call answers once it has passed."""
        return LLMError(ErrorKind.DEADLINE_EXCEEDED,
                        f"no answer within the call's deadline of {self.seconds:g}s (the THINK's "
                        "timeout, else llm.deadline), queueing and retries included")

    @asynccontextmanager
    async def within(self) -> AsyncIterator[None]:
        """Run the block until the deadline, then cancel it (closing any request it has open)
        and raise ``exceeded()``; a block that has no time left is not started."""
        left = self.left()
        if left <= 0:
            raise self.exceeded()
        timeout = asyncio.timeout(left)
        try:
            async with timeout:
                yield
        except TimeoutError:
            # Only our own expiry: a TimeoutError from inside the block is the block's to report.
            if timeout.expired():
                raise self.exceeded() from None
            raise
