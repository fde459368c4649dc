"""Worker threads that idle without costing the event loop: they wait in a ``ParkingQueue``.

The compiled reactor skips releasing and re-taking the GIL around ``epoll_wait`` (about 400
instructions, ~10 % of a NOOP round trip) when no other thread could want the GIL meanwhile.
A thread waiting, untimed, in an empty ``ParkingQueue`` cannot: only Python code puts into one,
and Python code needs the GIL. So the kernel's long-lived threads (SQLite writers, the sandbox
launcher's owner, every executor) wait in one, and an idle kernel serves NOOPs as if it had no
other thread. With the pure-Python reactor ``ParkingQueue`` is a plain ``queue.SimpleQueue``.
"""
from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

from ._extensions import load_twin
from .kernel import reactor as _reactor_twin

__all__ = ["ParkingExecutor", "ParkingQueue"]

ParkingQueue = load_twin("reactor", _reactor_twin).ParkingQueue


class ParkingExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose idle workers park in a ``ParkingQueue``."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers, thread_name_prefix)
        # Workers take their work from the executor's queue, handed to each when it starts; it is
        # replaced before the first one does (tests/kernel/test_parking.py fails if that breaks).
        self._work_queue = ParkingQueue()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:
            # The last worker out leaves its stop mark queued for the next, and an item left in
            # a parking queue means a thread may want the GIL: the reactor would never keep it.
            while True:
                try:
                    self._work_queue.get_nowait()
                except queue.Empty:
                    return
