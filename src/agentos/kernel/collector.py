"""The kernel process's policy for Python's cyclic garbage collector: a full collection walks
what came since the last one, not all the kernel holds.

A full (generation 2) collection walks every tracked object with the GIL held, ~0.5 us an
object, and each live sandboxed agent keeps ~70 of them. CPython 3.11 starts one each time the
objects that survived into generation 2 grew by a quarter, so a spawn storm runs one after
another, each longer: with 4,000 agents 45, 114 and 133 ms of CPU, then 163 ms as the shutdown
began (bench_scale; 0.3-0.9 s of wall time each on a busy box, the worst NOOP of the phase),
~0.4 s of CPU at 10,000. None of them found anything to free.

So what a full collection leaves alive is frozen (``gc.freeze``: kept out of later collections'
sight), and the next one walks only what came since: at least ten younger collections' worth
(~1,000 agents of a storm, 27-56 ms of CPU), however many run. A frozen object is still freed
by its reference count, as an agent's objects are when the agent is forgotten (the full
collections of a 4,000-agent shutdown found no garbage); only a reference cycle among frozen
objects that becomes garbage waits: every ``THAW_S`` the frozen objects go back to generation
2, and the next full collection walks them all once more. As the shutdown begins all is frozen
for good: the process ends, and ending thousands of agents must not walk them.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger("agentos.kernel")

#: Seconds between two thaws: how long a cycle of frozen objects that became garbage may wait.
THAW_S = 600.0


class Collector:
    """The policy, for the kernel's own process: ``start`` once the kernel has started (its
    modules, services and settings, ~48,000 objects, are frozen at once), ``stop`` as its
    shutdown begins. Not for a process that hosts anything else (a test's in-process kernel)."""

    def __init__(self, thaw_s: float = THAW_S) -> None:
        self.thaw_s = thaw_s
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        gc.callbacks.append(self._collected)
        gc.collect()
        self._timer = asyncio.get_running_loop().call_later(self.thaw_s, self.thaw)

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        # Called in whichever thread collected, holding the GIL; young generations are empty
        # after a full collection, so this freezes exactly what it walked and kept.
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()

    def thaw(self) -> None:
        """Hand the frozen objects back to the next full collection (and plan the next thaw)."""
        # Not gc.get_freeze_count() for the log: it walks every frozen object.
        log.debug("collector: the frozen objects go back to generation 2")
        gc.unfreeze()
        self._timer = asyncio.get_running_loop().call_later(self.thaw_s, self.thaw)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        gc.freeze()
        log.debug("collector: all objects frozen for the shutdown")
