"""Answers of many MiB: sent once, refused (not charged) when the client cannot take them.

The answer's text used to travel twice (``content`` and ``turn``), so an 8 MiB answer
made a frame over the SDK's 16 MiB limit, and that ``Client`` was dead for good.
"""
from __future__ import annotations

import pytest

from agentos import Client
from agentos.client.think import full_turn
from agentos.client.tools import Toolbox
from agentos.errors import TooLarge
from agentos.llm.service import _wire_turn
from agentos.llm.types import Completion, Usage
from agentos.protocol import Op
from agentos.testing import call_reply, text_reply

#: ~9 MiB of text: over half the 16 MiB frame limit, as in the report.
HUGE = "0123456789abcdef" * (9 * 1024 * 1024 // 16)
SMALL_LIMIT = 4 * 1024 * 1024


def _tokens(client: Client) -> dict[str, int]:
    (entry,) = client.usage()["agents"].values()
    tokens = entry["tokens"]
    return {"calls": entry["calls"], "errors": entry["errors"], "prompt": tokens["prompt"],
            "output": tokens["output"], "total": tokens["total"]}


def test_a_9_mib_answer_arrives_whole_with_the_default_limit(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply(HUGE, thought_signature="c2ln"))
    with llm_kernel.client() as c:
        reply = c.think("write a lot")
        assert reply.success and reply.content == HUGE
        # The SDK puts the turn back together exactly as Gemini sent it.
        assert reply.turn == {"role": "model", "parts": [
            {"text": HUGE}, {"text": "", "thoughtSignature": "c2ln"}]}
        assert _tokens(c)["output"] > 0
        assert c.noop(b"after") == b"after"


def test_an_answer_over_the_clients_limit_is_too_large_uncharged_and_the_client_lives(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply(HUGE))
    with Client(llm_kernel.process.socket_path, max_payload=SMALL_LIMIT) as c:
        c.context("create", "talk")
        with pytest.raises(TooLarge) as refused:
            c.think("write a lot", context="talk")
        assert refused.value.details["limit"] == SMALL_LIMIT
        assert refused.value.details["size"] > len(HUGE)
        assert "THINK" in str(refused.value) and str(SMALL_LIMIT) in str(refused.value)
        # The same Client goes on working.
        assert c.noop(b"still here") == b"still here"
        # Nothing was delivered: no tokens charged, and the context did not keep the answer.
        assert _tokens(c) == {"calls": 1, "errors": 1, "prompt": 0, "output": 0, "total": 0}
        assert c.context("get", "talk")["turns"] == 0
        llm_kernel.fake.script(text_reply("short"))
        reply = c.think("say less", context="talk")
        assert reply.success and reply.content == "short"
        assert _tokens(c)["total"] == reply.tokens["total"] > 0
    assert len(llm_kernel.fake.requests) == 2


def test_a_streamed_answer_over_the_frame_limit_arrives_whole_and_is_charged(llm_kernel) -> None:
    # Each chunk fits, and the END does not carry the text again, so nothing is refused.
    llm_kernel.fake.script(text_reply(HUGE, chunks=8))
    with Client(llm_kernel.process.socket_path, max_payload=SMALL_LIMIT) as c:
        stream = c.think_stream("write a lot")
        assert "".join(stream) == HUGE
        assert stream.reply is not None and stream.reply.content == HUGE
        assert _tokens(c)["output"] == stream.reply.tokens["output"] > 0
        assert c.noop(b"ok") == b"ok"


def test_the_turn_is_sent_without_the_answer_text_and_rebuilt_exactly() -> None:
    calls = [{"name": "add", "args": {"a": 1}, "id": "call_1"}, {"name": "sub", "args": {}}]
    parts = [
        {"text": "thinking hard", "thought": True},
        {"text": "Hello, "},
        {"text": "world", "thoughtSignature": "c2lnMQ=="},
        {"functionCall": calls[0], "thoughtSignature": "c2lnMg=="},
        {"functionCall": {"name": "sub"}},  # not what function_calls holds: sent as it is
        {"text": ""},
    ]
    completion = Completion(text="Hello, world", function_calls=calls, finish_reason="stop",
                            usage=Usage(), model="m", turn={"role": "model", "parts": parts})
    wire = _wire_turn(completion)
    assert wire["parts"] == [
        {"text": "thinking hard", "thought": True},
        {"content_chars": 7},
        {"content_chars": 5, "thoughtSignature": "c2lnMQ=="},
        {"function_call": 0, "thoughtSignature": "c2lnMg=="},
        {"functionCall": {"name": "sub"}},
        {"content_chars": 0},
    ]
    assert "Hello" not in str(wire)
    assert full_turn(wire, completion.text, calls) == completion.turn


def test_a_tool_loop_replays_the_model_turn_verbatim(llm_kernel) -> None:
    """The wire turn lacks the text and the call; the SDK's Toolbox still replays them exactly."""
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    llm_kernel.fake.script(call_reply(("add", {"a": 2, "b": 3}), text="Let me add.",
                                      thought_signature="c2ln"))
    with llm_kernel.client() as c:
        raw = c._call(Op.THINK, {"prompt": "2+3?", "functions": Toolbox(add).declarations()})
        llm_kernel.fake.script(call_reply(("add", {"a": 2, "b": 3}), text="Let me add.",
                                          thought_signature="c2ln"), text_reply("5"))
        reply = Toolbox(add).run(c, "2+3?")
    assert reply.content == "5"
    assert "Let me add." not in str(raw["turn"]) and "functionCall" not in str(raw["turn"])
    # What Gemini sent, and what the Toolbox replayed of its own first answer.
    def verbatim(call_id: str) -> list[dict]:
        return [{"text": "Let me add."},
                {"functionCall": {"name": "add", "args": {"a": 2, "b": 3}, "id": call_id},
                 "thoughtSignature": "c2ln"}]

    rebuilt = full_turn(raw["turn"], raw["content"], raw["function_calls"])["parts"]
    assert rebuilt == verbatim(rebuilt[1]["functionCall"]["id"])
    replayed = llm_kernel.fake.requests[-1].body["contents"][1]["parts"]
    assert replayed == verbatim(replayed[1]["functionCall"]["id"])
