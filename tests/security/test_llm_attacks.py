"""A sandboxed agent attacks the LLM gateway's issue 10 surface, in both kernel modes: it names a
model its policy does not allow in every spelling (``models/`` prefix, case, whitespace, path
and query tricks, ``*``) through THINK, a fallback chain, COUNT and EMBED, and sends malformed
values of the new fields (timeouts, candidates, chains, safety, schema reference bombs, EMBED
sizes). Every forbidden model is ``permission_denied`` before any request leaves the kernel,
every malformed value ``invalid_argument``, and the kernel logs no traceback."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.testing import FakeGemini

from .conftest import API_KEY, Users, hostile_kernel_in


@pytest.fixture(scope="module")
def attack(kernel_mode: str, users: Users, scripts: Path) -> Iterator[dict[str, Any]]:
    with FakeGemini(api_key=API_KEY).running_in_thread() as fake:
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "AGENTOS_GEMINI_MODEL": "gemini-test",
               "AGENTOS_LLM_CONFIG": json.dumps({"defaults": {"tokens": 100_000}})}
        with hostile_kernel_in(kernel_mode, users, scripts, env=env) as kernel:
            before = len(fake.requests)
            verdict = kernel.attack("llm_model_policy", capabilities=["think"])
            verdict["sent"] = [r.path for r in fake.requests[before:]]
            verdict["alive"] = kernel.alive()
            yield verdict


def test_a_forbidden_model_is_refused_in_every_spelling_and_through_every_opcode(
        attack: dict[str, Any]) -> None:
    assert attack["models"] and set(attack["models"].values()) == {"permission_denied"}, \
        {label: code for label, code in attack["models"].items() if code != "permission_denied"}
    assert not [path for path in attack["sent"] if "gemini-pro" in path.lower()], attack["sent"]


def test_malformed_issue_10_values_are_invalid_argument_and_the_kernel_carries_on(
        attack: dict[str, Any]) -> None:
    assert set(attack["malformed"].values()) == {"invalid_argument"}, \
        {label: code for label, code in attack["malformed"].items() if code != "invalid_argument"}
    assert attack["alive"]
