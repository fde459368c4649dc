"""An agent can never spend past its LLM budget, even with concurrent calls, and a child's budget
never exceeds its parent's: attacked from inside a sandboxed agent, in both kernel modes."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.llm.test_budget_reservations import GreedyGemini

from .conftest import API_KEY, Users, hostile_kernel_in

USD = 0.01
PRICE = {"input": 1.0, "output": 10.0}


@pytest.fixture(scope="module")
def overspend(kernel_mode: str, users: Users, scripts: Path) -> Iterator[dict[str, Any]]:
    with GreedyGemini(api_key=API_KEY).running_in_thread() as fake:
        fake.delay = 0.2  # the flood's calls are all in flight together
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "AGENTOS_GEMINI_MODEL": "gemini-test",
               "AGENTOS_LLM_CONFIG": json.dumps({"prices": {"gemini-test": PRICE}})}
        with hostile_kernel_in(kernel_mode, users, scripts, env=env) as kernel:
            script = kernel.script("llm_overspend")
            parent = kernel.spawn("llm_overspend", {"calls": 30, "child_script": script},
                                  capabilities=["think", "spawn"], llm={"usd": USD},
                                  limits={"pids": 32, "memory": "256Mi"})
            verdict = kernel.verdict(parent)
            [child] = kernel.admin.list_agents(name="overspend-unset")
            usage = kernel.admin.usage()
            yield {"parent": verdict, "child": kernel.verdict(child), "usage": usage,
                   "ids": {"parent": parent["id"], "child": child["id"]}}


def test_concurrent_thinks_never_spend_past_the_agents_usd_budget(overspend: dict[str, Any]) -> None:
    verdict = overspend["parent"]
    assert verdict["answered"] > 0 and verdict["refused"].get("usd", 0) > 0, verdict
    report = overspend["usage"]["agents"][f"agent:{overspend['ids']['parent']}"]
    assert 0 < report["cost_usd"] <= USD
    assert report["budget"]["reserved"] == {"tokens": 0, "usd": 0.0}


def test_a_child_never_gets_a_bigger_budget_than_its_parent(overspend: dict[str, Any]) -> None:
    spawn = overspend["parent"]["spawn"]
    assert spawn["wider"] == ["permission_denied", "llm.usd"]
    assert spawn["unset"] == "spawned"
    child = overspend["child"]
    assert child["refused"].get("usd", 0) > 0, child
    report = overspend["usage"]["agents"][f"agent:{overspend['ids']['child']}"]
    assert report["budget"]["usd"] == USD, "a child with no budget of its own gets its parent's"
    assert 0 < report["cost_usd"] <= USD
    teams = overspend["usage"]["teams"]
    assert teams["name:llm-overspend"]["cost_usd"] <= 2 * USD
