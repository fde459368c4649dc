"""Per-agent budgets: token totals, calls per minute, usage reports."""
from __future__ import annotations

import pytest

from agentos.llm.budgets import Budgets
from agentos.llm.config import AgentPolicy
from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.types import Usage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_total_refuses_the_call_after_the_one_that_crossed_it() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=100)
    budgets.admit("a", "a", policy)
    budgets.charge("a", Usage(prompt=60, output=30, total=90))
    budgets.admit("a", "a", policy)
    budgets.charge("a", Usage(prompt=60, output=30, total=90))
    with pytest.raises(LLMError) as caught:
        budgets.admit("a", "a", policy)
    assert caught.value.kind is ErrorKind.BUDGET_EXHAUSTED and caught.value.reason == "tokens"
    budgets.admit("b", "b", policy)  # budgets are per agent
    report = budgets.report("a", policy)
    assert report["calls"] == 2 and report["tokens"] == {"prompt": 120, "output": 60, "total": 180}
    assert report["budget"]["tokens_left"] == 0


def test_calls_per_minute_is_a_rolling_window() -> None:
    clock = Clock()
    budgets = Budgets(clock)
    policy = AgentPolicy(calls_per_minute=2)
    budgets.admit("a", "a", policy)
    clock.now += 10
    budgets.admit("a", "a", policy)
    clock.now += 5
    with pytest.raises(LLMError) as caught:
        budgets.admit("a", "a", policy)
    assert caught.value.reason == "calls_per_minute"
    assert caught.value.retry_after == pytest.approx(45.0)
    clock.now += 45.01
    budgets.admit("a", "a", policy)
    assert budgets.usage("a").calls == 3


def test_unlimited_policy_admits_everything() -> None:
    budgets = Budgets()
    for _ in range(1000):
        budgets.admit("a", "a", AgentPolicy())
    assert budgets.report("a", AgentPolicy())["budget"] == {
        "tokens": None, "calls_per_minute": None, "tokens_left": None}


def test_a_new_key_on_the_same_account_inherits_the_spent_budget() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=100, calls_per_minute=3)
    budgets.admit("agent:old", "name:worker", policy)
    budgets.charge("agent:old", Usage(prompt=50, output=50, total=100))
    with pytest.raises(LLMError, match="token budget"):
        budgets.admit("agent:new", "name:worker", policy)  # restarted under a new id
    assert budgets.report("agent:new", policy)["budget"]["tokens_left"] == 0
    assert budgets.report("agent:old", policy)["tokens"]["total"] == 100
    assert budgets.report("agent:new", policy)["tokens"]["total"] == 0, "usage stays per key"
