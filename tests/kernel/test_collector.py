"""The kernel's collector policy (kernel/collector.py): what a full collection leaves is frozen,
so the next walks only what came since; a thaw hands it back, so a reference cycle that became
garbage while frozen is still freed; the shutdown freezes all. Real collections, in this process
(each test unfreezes what it froze)."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from agentos.kernel.collector import Collector
from agentos.testing.kernel import KernelProcess


class _Node:
    """A tracked object that can be made part of a reference cycle."""

    me: _Node


@pytest.fixture(autouse=True)
def _thawed_after() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[_Node]:
    """A reference cycle nothing else reaches once this returns, and a weak reference to it."""
    node = _Node()
    node.me = node
    return weakref.ref(node)


_C = TypeVar("_C", bound=Collector)


@contextlib.asynccontextmanager
async def started(collector: _C) -> AsyncIterator[_C]:
    """``collector`` started on the running loop, and stopped after."""
    await collector.start()
    try:
        yield collector
    finally:
        collector.stop()


def test_a_full_collection_freezes_what_it_left() -> None:
    async def check() -> None:
        async with started(Collector()):
            frozen = gc.get_freeze_count()
            kept = [[n] for n in range(1000)]  # 1,001 tracked objects, alive
            gc.collect()
            assert gc.get_freeze_count() >= frozen + len(kept) + 1

    asyncio.run(check())


def test_a_cycle_that_became_garbage_while_frozen_is_freed_after_the_thaw() -> None:
    async def check() -> None:
        async with started(Collector()) as collector:
            node = _Node()
            node.me = node
            ref = weakref.ref(node)
            gc.collect()  # the node is alive: frozen
            del node
            gc.collect()
            assert ref() is not None, "frozen objects are out of the collector's sight"
            collector.thaw()
            assert gc.get_freeze_count() == 0
            gc.collect()
            assert ref() is None

    asyncio.run(check())


def test_the_thaw_comes_by_itself() -> None:
    class Counting(Collector):
        thaws = 0

        def thaw(self) -> None:
            self.thaws += 1
            super().thaw()

    async def check() -> None:
        async with started(Counting(thaw_s=0.01)) as collector:
            await asyncio.sleep(0.05)  # a timer due later than the thaw's: it runs after it
            assert collector.thaws >= 1

    asyncio.run(check())


def test_stopping_freezes_all_and_collects_nothing_more() -> None:
    async def check() -> None:
        collector = Collector()
        await collector.start()
        ref = _cycle()
        collector.stop()
        assert collector._collected not in gc.callbacks
        assert ref() is not None and gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None

    asyncio.run(check())


def test_the_kernel_freezes_its_heap_as_its_shutdown_begins(tmp_path: Path) -> None:
    with KernelProcess(tmp_path / "k") as k:
        assert k.client().noop(b"x") == b"x"
    assert "all objects frozen for the shutdown" in k.log()
