"""End to end: concurrent THINKs never spend past a budget, in tokens or in US dollars.

The fake answers every call with all the output the call allows (its ``maxOutputTokens``, a
quarter of it thinking): the worst case a reservation must survive. FakeGemini itself ignores
``maxOutputTokens``, so this subclass adds what a real model does.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import AsyncClient, Client
from agentos.client.think import ThinkReply
from agentos.errors import TooLarge
from agentos.testing import FakeGemini
from agentos.testing.fake_gemini import prompt_tokens
from agentos.testing.kernel import KernelProcess
from agentos.testing.script import Reply, text_reply

from .conftest import LLMKernel

CALLS = 20
PRICE = {"input": 1.0, "output": 10.0, "cached_input": 0.25}


class GreedyGemini(FakeGemini):
    """Every unscripted answer uses the whole output the request allows."""

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        cap = (body.get("generationConfig") or {}).get("maxOutputTokens") or 8192
        thoughts = cap // 4
        return Reply(text="x" * 4 * (cap - thoughts), thoughts_tokens=thoughts)


@pytest.fixture
def greedy_kernel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LLMKernel]:
    """A kernel whose ``llm`` section is the (indirect) parameter, on a GreedyGemini."""
    section = request.param
    with GreedyGemini().running_in_thread() as fake:
        fake.delay = 0.2  # calls overlap: each is admitted while others are in flight
        kernel = LLMKernel(tmp_path / "k", fake, {
            "AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
            "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": "",
            "AGENTOS_LLM_CONFIG": json.dumps(section)})
        kernel.process.start()
        try:
            yield kernel
        finally:
            status = kernel.process.stop()
    assert status == 0 and "Traceback" not in kernel.log(), kernel.log()


def section(llm: dict[str, Any]) -> pytest.MarkDecorator:
    """The greedy kernel's ``llm`` section."""
    return pytest.mark.parametrize("greedy_kernel", [llm], indirect=True, ids=["kernel"])


def think_at_once(process: KernelProcess, **options: Any) -> tuple[list[ThinkReply], dict[str, Any]]:
    """CALLS concurrent THINKs on one connection, then this client's USAGE report."""
    async def run() -> tuple[list[ThinkReply], dict[str, Any]]:
        async with await AsyncClient.connect(process.socket_path) as client:
            replies = await asyncio.gather(*(client.think(f"question {i}: " + "why " * 20, **options)
                                             for i in range(CALLS)))
            return list(replies), await client.usage()
    return asyncio.run(run())


def sent(fake: FakeGemini) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path.endswith(":generateContent")]


def mine(usage: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = usage["agents"][f"client:{os.getuid()}:{os.getpid()}"]
    return report


@section({"defaults": {"tokens": 3000}})
@pytest.mark.parametrize("max_output", [300, None], ids=["asked-300", "no-limit"])
def test_concurrent_thinks_never_spend_past_a_token_budget(greedy_kernel: LLMKernel,
                                                           max_output: int | None) -> None:
    options = {} if max_output is None else {"max_output_tokens": max_output}
    replies, usage = think_at_once(greedy_kernel.process, **options)
    refused = [r for r in replies if not r.success]
    answered = [r for r in replies if r.success]
    assert answered and refused, "the budget should admit some calls and refuse the rest"
    assert {r.error["type"] for r in refused} == {"budget_exhausted"}  # type: ignore[index]
    assert {r.error["reason"] for r in refused} == {"tokens"}  # type: ignore[index]
    report = mine(usage)
    assert report["tokens"]["total"] <= 3000
    assert report["tokens"]["total"] == sum(r.tokens["total"] for r in answered)
    assert report["budget"]["reserved"] == {"tokens": 0, "usd": 0.0}
    # The worst the provider could have billed for what the kernel sent fits the budget too.
    bodies = sent(greedy_kernel.fake)
    assert len(bodies) == len(answered)
    assert sum(prompt_tokens(b) + b["generationConfig"]["maxOutputTokens"] for b in bodies) <= 3000
    if max_output is not None:
        assert all(b["generationConfig"]["maxOutputTokens"] <= max_output for b in bodies)
        assert any(b["generationConfig"]["maxOutputTokens"] < max_output for b in bodies) or \
            3000 - report["tokens"]["total"] < max_output
    assert all(r.tokens["thoughts"] > 0 and r.tokens["cost_usd"] is None for r in answered)


@section({"defaults": {"usd": 0.01}, "prices": {"gemini-test": PRICE}})
def test_concurrent_thinks_never_spend_past_a_usd_budget(greedy_kernel: LLMKernel) -> None:
    replies, usage = think_at_once(greedy_kernel.process, max_output_tokens=200)
    answered = [r for r in replies if r.success]
    refused = [r for r in replies if not r.success]
    assert answered and refused
    assert {r.error["reason"] for r in refused} == {"usd"}  # type: ignore[index]
    for reply in answered:
        tokens = reply.tokens
        assert tokens["cost_usd"] == pytest.approx(
            (tokens["prompt"] * PRICE["input"] + tokens["output"] * PRICE["output"]) / 1e6)
    report = mine(usage)
    assert report["cost_usd"] == pytest.approx(sum(r.tokens["cost_usd"] for r in answered))
    assert report["cost_usd"] <= 0.01
    assert report["budget"]["usd"] == 0.01 and report["budget"]["usd_left"] < 0.01
    worst = sum(prompt_tokens(b) * PRICE["input"] + b["generationConfig"]["maxOutputTokens"] * PRICE["output"]
                for b in sent(greedy_kernel.fake)) / 1e6
    assert worst <= 0.01
    team = usage["teams"][report["team"]]
    assert report["team"] == f"uid:{os.getuid()}" and team["cost_usd"] == pytest.approx(report["cost_usd"])


@section({"defaults": {"usd": 1.0}, "prices": {}})
def test_a_usd_budget_refuses_a_model_without_a_price(greedy_kernel: LLMKernel) -> None:
    with greedy_kernel.client() as client:
        reply = client.think("hello")
        assert not reply.success and reply.error["reason"] == "usd"  # type: ignore[index]
        assert "gemini-test has no price in llm.prices" in reply.error["message"]  # type: ignore[index]
        assert not sent(greedy_kernel.fake)


@section({"defaults": {"tokens": 100_000}})
def test_an_answer_too_large_for_its_client_gives_its_reservation_back(greedy_kernel: LLMKernel) -> None:
    greedy_kernel.fake.script(text_reply("0123456789abcdef" * (5 * 1024 * 1024 // 16)))
    with Client(greedy_kernel.process.socket_path, max_payload=4 * 1024 * 1024) as client:
        with pytest.raises(TooLarge):
            client.think("a long one please")
        (report,) = client.usage()["agents"].values()
    assert report["tokens"]["total"] == 0 and report["errors"] == 1
    assert report["budget"]["tokens_left"] == 100_000
    assert report["budget"]["reserved"] == {"tokens": 0, "usd": 0.0}


def pdf(pages: int) -> dict[str, str]:
    """A THINK ``images`` entry holding a PDF of ``pages`` pages (as the fake counts them)."""
    body = b"%PDF-1.7\n/Type /Pages\n" + b"".join(b"%d 0 obj /Type /Page endobj\n" % n for n in range(pages))
    return {"mime_type": "application/pdf", "data": base64.b64encode(body).decode()}


@section({"defaults": {"tokens": 3000}})
def test_media_is_counted_by_the_provider_before_a_budgeted_call(greedy_kernel: LLMKernel) -> None:
    # 20 pages bill 20 x 258 tokens, far past the budget; the local estimate alone cannot see them.
    with greedy_kernel.client() as client:
        big = client.think("summarise", images=[pdf(20)])
        small = client.think("summarise", images=[pdf(2)], max_output_tokens=100)
        usage = client.usage()
    assert not big.success and big.error is not None and big.error["reason"] == "tokens"
    assert small.success and small.tokens["prompt"] >= 2 * 258
    counts = [r.body for r in greedy_kernel.fake.requests if r.path.endswith(":countTokens")]
    assert len(counts) == 2, "each budgeted call with media is counted first"
    bodies = sent(greedy_kernel.fake)
    assert len(bodies) == 1, "the call the budget cannot hold is never sent"
    assert prompt_tokens(bodies[0]) + bodies[0]["generationConfig"]["maxOutputTokens"] <= 3000
    assert mine(usage)["tokens"]["total"] <= 3000


def test_media_without_a_budget_is_not_counted_first(llm_kernel: LLMKernel) -> None:
    with llm_kernel.client() as client:
        assert client.think("summarise", images=[pdf(3)]).success
    assert not [r for r in llm_kernel.fake.requests if r.path.endswith(":countTokens")]
