"""The kernel's event loop: asyncio's own, with the reactor's clients served between callbacks.

The reactor serves clients inside ``select()``, which runs between loop iterations, and
one iteration runs every callback that was due when it started. ``select()`` hands the
loop only a small batch of fds and frames, but it cannot bound what one callback wakes:
a read or a timer that wakes 32 THINK tasks at once makes one iteration of 32 steps of
~150 us each, and a NOOP arriving meanwhile would wait for all of them.

So once an iteration has scheduled more than ``FREE`` callbacks with ``call_soon`` (every
task step and future callback goes through it), this loop adds a checkpoint to its queue
after every ``CHECK_EVERY`` more; a checkpoint serves the reactor's clients if they have
waited ``SLICE`` seconds or more. Short iterations, the common case, pay only a counter.
Only public API is used: ``call_soon`` is the method asyncio's tasks and futures call on
their loop, whatever its class.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import Any, TypeVarTuple, Unpack

from ..parking import ParkingExecutor

#: Callbacks an iteration schedules before checkpoints start.
FREE = 2
#: Callbacks scheduled between two checkpoints after that.
CHECK_EVERY = 1
#: Longest clients wait for the reactor while callbacks run (seconds), checkpoints allowing.
SLICE = 0.0002

_Ts = TypeVarTuple("_Ts")
_call_soon = asyncio.SelectorEventLoop.call_soon


class ReactorLoop(asyncio.SelectorEventLoop):
    """A ``SelectorEventLoop`` on the reactor that lets it serve clients during long iterations."""

    def __init__(self, reactor: Any, *, free: int = FREE, check_every: int = CHECK_EVERY,
                 slice_s: float = SLICE) -> None:
        if free < 0 or check_every < 1:
            raise ValueError("free must be >= 0 and check_every >= 1")
        super().__init__(reactor)
        # Private names (mangled): asyncio's loops keep state in single-underscore attributes.
        self.__reactor = reactor
        self.__free = free
        self.__check_every = check_every
        self.__slice = slice_s
        self.__round = -1
        self.__scheduled = 0
        # run_in_executor's workers idle parked, as the kernel's other threads (agentos.parking).
        self.set_default_executor(ParkingExecutor(thread_name_prefix="agentos-worker"))

    def call_soon(self, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
                  context: Context | None = None) -> asyncio.Handle:
        # Every task step and future callback comes through here: the base method is called
        # directly (no super() object) and the counter is a local.
        handle = _call_soon(self, callback, *args, context=context)
        rounds = self.__reactor.rounds
        if rounds == self.__round:
            scheduled = self.__scheduled = self.__scheduled + 1
        else:
            # A new iteration: what it schedules runs in the next one, counted afresh.
            self.__round = rounds
            scheduled = self.__scheduled = 1
        if scheduled > self.__free and not scheduled % self.__check_every:
            _call_soon(self, self.__checkpoint)
        return handle

    def __checkpoint(self) -> None:
        self.__reactor.serve_clients(self.__slice)
