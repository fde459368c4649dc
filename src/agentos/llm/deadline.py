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
from dataclasses import dataclass, field
from types import TracebackType

from .errors import ErrorKind, LLMError


@dataclass(frozen=True)
class Deadline:
    """A monotonic instant; ``seconds`` is the time it gave, for the error message."""

    at: float
    seconds: float
    #: The loop the call runs on, when whoever set the deadline has it at hand: on Python 3.11
    #: finding the running loop costs a getpid() syscall, and every attempt would look it up.
    loop: asyncio.AbstractEventLoop | None = field(default=None, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, loop: asyncio.AbstractEventLoop | None = None) -> Deadline:
        return cls(time.monotonic() + seconds, seconds, loop)

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
    """``Deadline.within()``: a class, not an ``asynccontextmanager`` generator, and its own
    timer instead of an ``asyncio.timeout`` inside, because every attempt of every THINK enters
    one. The cancellation is ``asyncio.timeout``'s exactly: the timer cancels the task, and only
    a cancellation that was ours alone (``uncancel``) becomes ``exceeded()``."""

    __slots__ = ("_deadline", "_task", "_cancelling", "_timer", "_expired")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._expired = False

    async def __aenter__(self) -> None:
        deadline = self._deadline
        if deadline.left() <= 0:
            raise deadline.exceeded()
        task = asyncio.current_task(deadline.loop)
        if task is None:
            raise RuntimeError("Deadline.within() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._timer = task.get_loop().call_at(deadline.at, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._timer.cancel()
        if not self._expired:
            return  # a TimeoutError from inside the block is the block's to report
        # Our cancellation is spent here whatever the block did with it. It ends the block as
        # the deadline when nobody else cancelled too, or when the block turned it into a
        # TimeoutError of its own.
        if (self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError
                or exc_type is not None and issubclass(exc_type, TimeoutError)):
            raise self._deadline.exceeded() from None
