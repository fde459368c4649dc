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
from dataclasses import dataclass
from types import TracebackType

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

    def within(self) -> _Within:
        """Run the block until the deadline, then cancel it (closing any request it has open)
        and raise ``exceeded()``; a block that has no time left is not started."""
        return _Within(self)


class _Within:
    """``Deadline.within()``: a class, not an ``asynccontextmanager`` generator, because every
    attempt of every THINK enters one (half the cost)."""

    __slots__ = ("_deadline", "_timeout")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        left = self._deadline.left()
        if left <= 0:
            raise self._deadline.exceeded()
        self._timeout = asyncio.timeout(left)
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            expired = True
        else:
            # The block may have turned our cancellation into a TimeoutError of its own.
            expired = exc_type is not None and issubclass(exc_type, TimeoutError)
        # Only our own expiry: a TimeoutError from inside the block is the block's to report.
        if expired and self._timeout.expired():
            raise self._deadline.exceeded() from None
