"""``in_slices``: per-item work on the loop gives the loop back once its budget is spent, and
not before (order of steps, never time)."""
from __future__ import annotations

import asyncio

from agentos.kernel.slices import in_slices


async def _interleaving(budget: float, items: int = 4) -> list[str]:
    steps: list[str] = []

    async def other() -> None:
        for n in range(items):
            steps.append(f"other{n}")
            await asyncio.sleep(0)

    async def sliced() -> None:
        async for n in in_slices(range(items), budget):
            steps.append(f"item{n}")

    await asyncio.gather(sliced(), other())
    return steps


def test_a_spent_budget_lets_other_tasks_run_between_items() -> None:
    steps = asyncio.run(_interleaving(budget=0.0))
    assert steps[:4] == ["item0", "other0", "item1", "other1"]


def test_within_the_budget_every_item_runs_in_one_go() -> None:
    steps = asyncio.run(_interleaving(budget=3600.0))
    assert steps[:4] == ["item0", "item1", "item2", "item3"]


def test_every_item_is_yielded_once_in_order() -> None:
    async def collect() -> list[int]:
        return [n async for n in in_slices(iter(range(100)), 0.0)]

    assert asyncio.run(collect()) == list(range(100))
