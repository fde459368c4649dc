"""Safety settings, candidate count and stop sequences, from THINK to the fakes over real HTTP and back."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from agentos.client.think import ThinkReply
from agentos.errors import InvalidArgument
from agentos.kernel.identity import Identity
from agentos.kernel.syscalls import Call
from agentos.llm.config import LLMConfig
from agentos.llm.request import parse_json
from agentos.protocol import Op
from agentos.testing import FakeGemini, FakeOpenAI, Reply, blocked_reply, text_reply
from tests.llm.test_service import _service, _think

HARASSMENT, DANGEROUS = "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_DANGEROUS_CONTENT"


def _gemini(tmp_path, monkeypatch, section: dict, script: list[Reply], *bodies: dict,
            context: str | None = None) -> tuple[list[Any], FakeGemini, dict | None]:
    """THINK each body as agent a1 against a fresh fake; the answers (or the error raised),
    the fake, and the context's contents afterwards."""
    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, section)
            try:
                fake.script(*script)
                conn = SimpleNamespace(context=Identity(pid=4242, uid=1000, gid=1000, agent_id="a1"))
                if context is not None:
                    await service.context(Call(kernel, conn, int(Op.CONTEXT), 1,
                                               json.dumps({"op": "create", "id": context}).encode()))
                answers: list[Any] = []
                for body in bodies:
                    try:
                        answers.append(json.loads(await service.think(_think(kernel, "a1", body))))
                    except InvalidArgument as exc:
                        answers.append(exc)
                kept = None if context is None else await service.context(Call(
                    kernel, conn, int(Op.CONTEXT), 2,
                    json.dumps({"op": "get", "id": context}).encode()))
                return answers, fake, kept
            finally:
                await service.stop()

    return asyncio.run(main())


def _generated(fake: FakeGemini) -> list[dict]:
    return [r.body for r in fake.requests if ":generate" in r.path]


# --- safety settings ---------------------------------------------------------------------------

def test_safety_settings_reach_gemini_over_the_kernels_defaults(tmp_path, monkeypatch) -> None:
    section = {"safety": {"dangerous_content": "block_only_high", "harassment": "block_low_and_above"}}
    answers, fake, _ = _gemini(
        tmp_path, monkeypatch, section, [text_reply("a"), text_reply("b"), text_reply("c")],
        {"prompt": "x", "safety": {"harassment": "block_none"}},
        {"prompt": "x", "safety": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}]},
        {"prompt": "x"})
    assert all(a["success"] for a in answers)
    first, second, third = (body["safetySettings"] for body in _generated(fake))
    assert first == [{"category": DANGEROUS, "threshold": "BLOCK_ONLY_HIGH"},
                     {"category": HARASSMENT, "threshold": "BLOCK_NONE"}]
    assert second == [{"category": DANGEROUS, "threshold": "BLOCK_ONLY_HIGH"},
                      {"category": HARASSMENT, "threshold": "BLOCK_LOW_AND_ABOVE"},
                      {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}]
    assert third == first[:1] + [{"category": HARASSMENT, "threshold": "BLOCK_LOW_AND_ABOVE"}]


@pytest.mark.parametrize("safety,message", [
    ({"harasment": "block_none"}, r"safety\[harasment\]: unknown category 'harasment'"),
    ({"harassment": "block_all"}, r"safety\[harassment\]: unknown threshold 'block_all'"),
    ({"harassment": 1}, r"safety\[harassment\]: unknown threshold"),
    ([{"category": HARASSMENT}], r"safety\[0\] must be \{category, threshold\}"),
    ([{"category": HARASSMENT, "threshold": "OFF"}, {"category": "harassment", "threshold": "OFF"}],
     r"safety\[1\]: HARM_CATEGORY_HARASSMENT is given twice"),
    ("block_none", "safety must be a mapping of category to threshold"),
])
def test_malformed_safety_is_invalid_argument_naming_the_entry(safety: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_json({"prompt": "x", "safety": safety})


def test_kernel_safety_is_checked_at_start_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"llm.safety\[violence\]: unknown category"):
        LLMConfig.from_section({"safety": {"violence": "off"}}, {})
    with pytest.raises(ValueError, match="llm.safety: the openai provider has no safety settings"):
        LLMConfig.from_section({"provider": "openai", "model": "m", "safety": {"harassment": "off"}}, {})


@pytest.mark.parametrize("reply,source,reason,text", [
    (blocked_reply(HARASSMENT, text="It starts well"), "answer", "SAFETY", "It starts well"),
    (blocked_reply(prompt=True), "prompt", "SAFETY", ""),
    (Reply(block_reason="PROHIBITED_CONTENT"), "prompt", "PROHIBITED_CONTENT", ""),
])
def test_a_blocked_answer_is_a_safety_answer_and_leaves_the_context_as_it_was(
        tmp_path, monkeypatch, reply: Reply, source: str, reason: str, text: str) -> None:
    answers, _, kept = _gemini(tmp_path, monkeypatch, {}, [reply],
                               {"prompt": "x", "context": "talk"}, context="talk")
    (answer,) = answers
    assert answer["success"] and answer["error"] is None
    assert answer["finish_reason"] == "safety" and answer["content"] == text
    assert (answer["safety"]["blocked"], answer["safety"]["source"],
            answer["safety"]["reason"]) == (True, source, reason)
    flagged = [r["category"] for r in answer["safety"].get("ratings", []) if r.get("blocked")]
    assert flagged == ([HARASSMENT] if source == "answer" else
                       [DANGEROUS] if reason == "SAFETY" else [])
    assert kept is not None and kept["contents"] == []


# --- candidates --------------------------------------------------------------------------------

def test_candidates_are_generated_answered_and_only_the_first_is_kept(tmp_path, monkeypatch) -> None:
    answers, fake, kept = _gemini(
        tmp_path, monkeypatch, {}, [Reply(text="zero", alternatives=["one", "two"])],
        {"prompt": "x", "candidates": 3, "context": "talk"}, context="talk")
    (answer,) = answers
    assert _generated(fake)[0]["generationConfig"]["candidateCount"] == 3
    assert answer["content"] == "zero" and answer["finish_reason"] == "stop"
    # The first candidate's text is the answer's own, sent once.
    assert answer["candidates"] == [
        {"finish_reason": "stop"},
        {"content": "one", "function_calls": [], "finish_reason": "stop"},
        {"content": "two", "function_calls": [], "finish_reason": "stop"}]
    reply = ThinkReply.from_payload(answer)
    assert [c["content"] for c in reply.candidates] == ["zero", "one", "two"]
    assert kept is not None
    assert [t["parts"][0]["text"] for t in kept["contents"]] == ["x", "zero"]


@pytest.mark.parametrize("body,message", [
    ({"candidates": 2, "stream": True}, "candidates > 1 cannot be streamed"),
    ({"candidates": 0}, "candidates must be an integer from 1 to 8"),
    ({"candidates": 9}, "candidates must be an integer from 1 to 8"),
    ({"candidates": True}, "candidates must be an integer"),
    ({"stop": ""}, "stop must be a non-empty string"),
    ({"stop": ["a", "b", "c", "d", "e", "f"]}, "at most 5"),
])
def test_malformed_candidates_and_stops_are_invalid_argument(body: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_json({"prompt": "x", **body})


def test_one_streamed_candidate_is_allowed() -> None:
    assert parse_json({"prompt": "x", "candidates": 1, "stream": True}).options.candidates == 1


# --- stop sequences ----------------------------------------------------------------------------

def test_stop_sequences_reach_gemini_and_cut_the_answer(tmp_path, monkeypatch) -> None:
    answers, fake, _ = _gemini(tmp_path, monkeypatch, {}, [text_reply("alpha END beta")] * 2,
                               {"prompt": "x", "stop": ["END", "STOP"]}, {"prompt": "x", "stop": "beta"})
    assert [a["content"] for a in answers] == ["alpha ", "alpha END "]
    assert [b["generationConfig"]["stopSequences"] for b in _generated(fake)] == [
        ["END", "STOP"], ["beta"]]


# --- the OpenAI-compatible provider ------------------------------------------------------------

def test_openai_takes_stop_and_n_and_refuses_safety(tmp_path, monkeypatch) -> None:
    async def main():
        async with FakeGemini() as gemini, FakeOpenAI() as fake:
            section = {"provider": "openai", "model": "llama-test", "base_url": fake.base_url}
            kernel, service = await _service(tmp_path, gemini, monkeypatch, section)
            try:
                fake.script(text_reply("alpha END beta"),
                            Reply(text="zero", alternatives=["one"]),
                            Reply(text="withheld", finish_reason="SAFETY"))
                cut = json.loads(await service.think(_think(kernel, "a1", {"prompt": "x", "stop": "END"})))
                two = json.loads(await service.think(_think(kernel, "a1", {"prompt": "x", "candidates": 2})))
                filtered = json.loads(await service.think(_think(kernel, "a1", {"prompt": "x"})))
                with pytest.raises(InvalidArgument, match="not supported by the openai provider"):
                    await service.think(_think(kernel, "a1", {"prompt": "x", "safety": {"harassment": "off"}}))
                return cut, two, filtered, [r.body for r in fake.requests if "chat" in r.path]
            finally:
                await service.stop()

    cut, two, filtered, bodies = asyncio.run(main())
    assert cut["content"] == "alpha " and bodies[0]["stop"] == ["END"]
    assert bodies[1]["n"] == 2 and two["content"] == "zero"
    assert ThinkReply.from_payload(two).candidates[1]["content"] == "one"
    assert filtered["success"] and filtered["finish_reason"] == "safety"
    assert filtered["safety"] == {"blocked": True, "source": "answer", "reason": "content_filter"}
    assert len(bodies) == 3, "a refused safety setting never reaches the server"

