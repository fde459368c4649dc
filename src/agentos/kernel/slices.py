"""Per-item work on the event loop in slices of at most ``SLICE`` seconds: between two slices
the loop serves everyone else, so a thousand items of ~0.5 ms never make one 500 ms stall."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

#: Longest the loop is held by one slice (seconds), give or take one item.
SLICE = 0.001

_T = TypeVar("_T")


async def in_slices(items: Iterable[_T], budget: float = SLICE) -> AsyncIterator[_T]:
    """Each of ``items``, returning to the loop whenever ``budget`` seconds went by without it."""
    due = time.perf_counter() + budget
    for item in items:
        yield item
        if time.perf_counter() >= due:
            await asyncio.sleep(0)
            due = time.perf_counter() + budget
