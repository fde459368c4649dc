"""One deadline per THINK, covering everything the call does until it answers.

It is fixed when the THINK arrives (its ``timeout``, else ``llm.deadline``) and
shared by whatever the call goes through: queueing for a scheduler slot, each
attempt, the backoff between attempts, a rate-limited model's pause, and a
fallback chain's next model. Those check ``left()`` before they wait and run
each attempt ``within()`` it, so retries can no longer add up past it.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from types import TracebackType

from .errors import ErrorKind, LLMError

#: Alarms kept before cancelled ones are swept out of the heap (when they are over half of it).
_COMPACT_ABOVE = 64


class Alarms:
    """Callbacks due at far-off instants on one loop, kept off asyncio's timer heap.

    Every THINK sets two (its deadline here, its HTTP exchange's timeout in ``lean_http``) and
    nearly always cancels both long before they are due. A ``call_at`` each would cost a
    ``TimerHandle`` (a Python object) and heap moves compared by a Python ``__lt__``, then
    the loop's sweep of cancelled handles; an alarm is a ``(when, key)`` tuple on a heap of
    its own and a dict entry, and only the earliest holds a loop timer. A cancelled alarm
    stays on the heap until it reaches the top, or until more than half the heap is cancelled.
    """

    __slots__ = ("loop", "_heap", "_live", "_keys", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Callable[[], object]] = {}
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def at(self, when: float, callback: Callable[[], object]) -> int:
        """Run ``callback`` at ``when`` (the loop's clock) unless ``cancel``led; its key."""
        key = next(self._keys)
        self._live[key] = callback
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if when < self._timer_at:
            self._wake_at(when)
        elif len(heap) > _COMPACT_ABOVE and len(heap) > 2 * len(self._live):
            live = self._live
            heap[:] = [entry for entry in heap if entry[1] in live]
            heapq.heapify(heap)
        return key

    def cancel(self, key: int) -> None:
        self._live.pop(key, None)

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        heap, live = self._heap, self._live
        now = self.loop.time()
        while heap and (heap[0][0] <= now or heap[0][1] not in live):
            callback = live.pop(heapq.heappop(heap)[1], None)
            if callback is None:
                continue
            # Run here, not queued: a queued callback could no longer be cancelled.
            try:
                callback()
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": f"alarm {callback!r} failed", "exception": exc})
        if heap:
            self._wake_at(heap[0][0])


class Deadline:
    """A monotonic instant; ``seconds`` is the time it gave, for the error message."""

    __slots__ = ("at", "seconds", "alarms")

    def __init__(self, at: float, seconds: float, alarms: Alarms | None = None) -> None:
        self.at = at
        self.seconds = seconds
        #: Where ``within()`` sets its alarm, when whoever set the deadline keeps one for its
        #: loop (the llm service does); else each ``within()`` takes a loop timer of its own.
        #: It names the loop too: on Python 3.11 finding the running loop costs a getpid().
        self.alarms = alarms

    def __repr__(self) -> str:
        return f"Deadline(at={self.at!r}, seconds={self.seconds!r})"

    @classmethod
    def after(cls, seconds: float, alarms: Alarms | None = None) -> Deadline:
        return cls(time.monotonic() + seconds, seconds, alarms)

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
    """``Deadline.within()``: a class, not an ``asynccontextmanager`` generator, and an alarm
    instead of an ``asyncio.timeout`` inside, because every attempt of every THINK enters
    one. The cancellation is ``asyncio.timeout``'s exactly: the alarm cancels the task, and only
    a cancellation that was ours alone (``uncancel``) becomes ``exceeded()``."""

    __slots__ = ("_deadline", "_task", "_cancelling", "_alarms", "_alarm", "_expired")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._expired = False

    async def __aenter__(self) -> None:
        deadline = self._deadline
        if deadline.at <= time.monotonic():  # ``left() <= 0`` without its call
            raise deadline.exceeded()
        alarms = deadline.alarms
        task = asyncio.current_task(None if alarms is None else alarms.loop)
        if task is None:
            raise RuntimeError("Deadline.within() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if alarms is None:
            alarms = Alarms(task.get_loop())
        self._alarms = alarms
        self._alarm = alarms.at(deadline.at, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._alarms.cancel(self._alarm)
        if not self._expired:
            return  # a TimeoutError from inside the block is the block's to report
        # Our cancellation is spent here whatever the block did with it. It ends the block as
        # the deadline when nobody else cancelled too, or when the block turned it into a
        # TimeoutError of its own.
        if (self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError
                or exc_type is not None and issubclass(exc_type, TimeoutError)):
            raise self._deadline.exceeded() from None
