"""A hostile model endpoint: absurd usage numbers, answers of the wrong shape, a stream that never
ends. The kernel must answer every THINK (no ``internal``, no traceback in its log), never let an
answer refund a budget or hide what it cost, and end an endless stream at the call's deadline.

The endpoint is FakeGemini serving, in place of its own answer, the events a test sets (as one
JSON body, or as SSE events when the call streams): the real wire, hostile content.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from agentos import Client
from agentos.llm.openai_compat import ChoiceAssembler
from agentos.llm.types import MAX_TOKEN_COUNT, Usage
from agentos.testing import FakeGemini
from agentos.testing._gemini_wire import json_response

from .conftest import LLMKernel

BUDGET = 10_000_000
MAX_OUTPUT = 100


class HostileGemini(FakeGemini):
    """Answers ``events`` (when set) instead of its own rendering; ``endless`` streams for ever."""

    events: list[Any] | None = None
    endless = False

    async def _generate(self, request: web.Request, body: dict[str, Any], model: str,
                        action: str) -> web.StreamResponse:
        if self.endless:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "la "}]}}]}
            while await self.pause(0.01):
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            return resp
        if self.events is None:
            return await super()._generate(request, body, model, action)
        if action == "generateContent":
            return json_response(self.events[0])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in self.events:
            await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
        await resp.write_eof()
        return resp


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMKernel]:
    with HostileGemini().running_in_thread() as fake:
        kernel = LLMKernel(tmp_path_factory.mktemp("hostile") / "k", fake, {
            "AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
            "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": "",
            "AGENTOS_LLM_BACKOFF_BASE": "0.01",
            "AGENTOS_LLM_CONFIG": json.dumps({"defaults": {"tokens": BUDGET},
                                              "retry": {"max_attempts": 1}})})
        kernel.start()
        try:
            yield kernel
        finally:
            status = kernel.process.stop()
    log = kernel.log()
    assert status == 0 and "Traceback" not in log, log


@pytest.fixture
def fake(hostile: LLMKernel) -> Iterator[HostileGemini]:
    fake = hostile.fake
    assert isinstance(fake, HostileGemini)
    yield fake
    fake.events, fake.endless = None, False


def _think(client: Client, stream: bool, **options: Any) -> Any:
    if not stream:
        return client.think("hello there", **options)
    answer = client.think_stream("hello there", **options)
    for _ in answer:
        pass
    return answer.reply


def _budget(client: Client) -> dict[str, Any]:
    report = client.usage()
    mine = report["agents"].get(report["you"])
    if mine is None:  # no call yet
        return {"tokens_left": BUDGET, "reserved": {"tokens": 0, "usd": 0.0}}
    budget: dict[str, Any] = mine["budget"]
    return budget


def _answer(usage: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                            "finishReason": "STOP", "index": 0}],
            **({} if usage is None else {"usageMetadata": usage})}


ABSURD_USAGE = {
    "negative": {"promptTokenCount": -5_000_000, "candidatesTokenCount": -5_000_000,
                 "totalTokenCount": -10_000_000},
    "huge": {"promptTokenCount": 10**30, "candidatesTokenCount": 10**30, "totalTokenCount": 10**31},
    "fractional": {"promptTokenCount": 1.5, "candidatesTokenCount": 0.25, "totalTokenCount": 1.75},
    "not-numbers": {"promptTokenCount": "12", "candidatesTokenCount": {"n": 1},
                    "totalTokenCount": [3]},
    "missing": None,
    "not-an-object": "lots",
}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])
@pytest.mark.parametrize("usage", list(ABSURD_USAGE.values()), ids=list(ABSURD_USAGE))
def test_absurd_usage_is_charged_the_reservation_and_never_refunds(
        hostile: LLMKernel, fake: HostileGemini, usage: Any, stream: bool) -> None:
    fake.events = [_answer(usage)]
    with hostile.client() as client:
        before = _budget(client)["tokens_left"]
        reply = _think(client, stream, max_output_tokens=MAX_OUTPUT)
        assert reply.success, reply.error
        tokens = reply.tokens
        # Nothing the provider could be believed about: the call costs what it reserved.
        assert tokens["output"] == MAX_OUTPUT and tokens["prompt"] > 0
        assert tokens["total"] == tokens["prompt"] + tokens["output"]
        budget = _budget(client)
        assert budget["tokens_left"] == before - tokens["total"]
        assert budget["reserved"] == {"tokens": 0, "usd": 0.0}


def test_a_small_total_cannot_hide_the_prompt_and_output(hostile: LLMKernel,
                                                         fake: HostileGemini) -> None:
    fake.events = [_answer({"promptTokenCount": 40, "candidatesTokenCount": 30,
                            "totalTokenCount": 1, "cachedContentTokenCount": 10**6,
                            "thoughtsTokenCount": 5})]
    with hostile.client() as client:
        before = _budget(client)["tokens_left"]
        reply = client.think("hello there")
        assert reply.tokens["total"] == 40 + 30 + 5  # thinking is billed as output
        assert reply.tokens["cached"] == 40  # never more than the prompt
        assert _budget(client)["tokens_left"] == before - reply.tokens["total"]


MALFORMED = {
    "candidates-not-a-list": {"candidates": "x"},
    "candidate-not-an-object": {"candidates": [1, None, {"content": 5}]},
    "parts-not-a-list": {"candidates": [{"content": {"parts": "abc"}, "finishReason": "STOP"}]},
    "parts-of-junk": {"candidates": [{"content": {"parts": [5, {"text": 7},
                                                            {"functionCall": "x"}]},
                                      "finishReason": "STOP"}]},
    "function-call-junk": {"candidates": [{"content": {"parts": [
        {"functionCall": {"name": 5, "args": [1]}}]}, "finishReason": 7}]},
    "odd-indexes": {"candidates": [{"index": -5, "content": {"parts": [{"text": "a"}]},
                                    "finishReason": "STOP"},
                                   {"index": 10**30, "content": {"parts": [{"text": "b"}]},
                                    "finishReason": "STOP"}]},
    "safety-junk": {"candidates": [{"content": {"parts": [{"text": "a"}]},
                                    "finishReason": "SAFETY", "safetyRatings": "bad"}]},
    "prompt-feedback-junk": {"promptFeedback": {"blockReason": ["x"], "safetyRatings": 5}},
    "model-version-junk": {**_answer(None), "modelVersion": {"a": 1}},
    "not-an-object": [1, 2],
    "null": None,
    "error-junk": {"error": {"code": "x", "message": 5, "status": []}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])
@pytest.mark.parametrize("answer", list(MALFORMED.values()), ids=list(MALFORMED))
def test_an_answer_of_the_wrong_shape_is_an_answer_not_internal(
        hostile: LLMKernel, fake: HostileGemini, answer: Any, stream: bool) -> None:
    fake.events = [answer]
    with hostile.client() as client:
        reply = _think(client, stream)
        if not reply.success:
            assert reply.error["type"] == "unavailable", reply.error
            assert reply.tokens["total"] == 0
        assert _budget(client)["reserved"] == {"tokens": 0, "usd": 0.0}
        assert client.noop(b"alive") == b"alive"


def test_a_stream_that_never_ends_stops_at_the_calls_deadline(hostile: LLMKernel,
                                                               fake: HostileGemini) -> None:
    fake.endless = True
    with hostile.client() as client:
        before = _budget(client)["tokens_left"]
        chunks = 0
        stream = client.think_stream("sing", timeout=1)
        for _ in stream:
            chunks += 1
        reply = stream.reply
        assert reply is not None and chunks > 0 and not reply.success
        assert reply.error is not None and reply.error["type"] == "deadline_exceeded", reply.error
        # What it streamed may have been billed: the call is charged as a cut-off call is.
        budget = _budget(client)
        assert budget["reserved"] == {"tokens": 0, "usd": 0.0}
        assert budget["tokens_left"] <= before
        assert client.noop(b"alive") == b"alive"


@pytest.mark.parametrize("raw, counted", [(-1, 0), (2.0, 2), (2.5, 0), ("7", 0), (True, 0),
                                          (MAX_TOKEN_COUNT + 1, 0), (None, 0), (12, 12)])
def test_only_a_count_is_counted(raw: Any, counted: int) -> None:
    assert Usage.reported(prompt=raw, output=0, total=0).prompt == counted


def test_an_openai_compatible_answer_with_absurd_usage_counts_nothing_it_cannot_trust() -> None:
    choice = ChoiceAssembler("m")
    choice.feed_message({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": -100, "completion_tokens": "9",
                                   "total_tokens": -109,
                                   "prompt_tokens_details": {"cached_tokens": 10**40},
                                   "completion_tokens_details": "x"}})
    usage = choice.finish(streamed=False).usage
    assert (usage.prompt, usage.output, usage.total, usage.cached, usage.thoughts) == (0, 0, 0, 0, 0)
