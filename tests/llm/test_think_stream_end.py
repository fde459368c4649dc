"""A streamed THINK always ends with STREAM|END or ERROR, read as raw frames.

A model failure found before any text (no API key, an exhausted budget) is an answer with
``success: false``: for a streamed request it is the END frame, never a plain REPLY.
"""
from __future__ import annotations

import json
import re
import socket

import pytest

from agentos.client.think import ThinkReply
from agentos.protocol import FrameDecoder, Op, encode_frame
from agentos.testing import call_reply, text_reply

REPLY, ERROR, STREAM, END = 0x01, 0x03, 0x05, 0x0D


def _think(llm_kernel, payload: bytes) -> list:
    """Every frame of one THINK, up to and including its final frame."""
    frames: list = []
    decoder = FrameDecoder()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(llm_kernel.process.socket_path))
        sock.sendall(encode_frame(Op.THINK, 9, payload))
        while not frames or frames[-1].flags == STREAM:
            data = sock.recv(65536)
            assert data, "the kernel closed the connection before the request ended"
            frames += decoder.feed(data)
    assert all(f.request_id == 9 and f.opcode == Op.THINK for f in frames)
    return frames


@pytest.mark.llm_env(GEMINI_API_KEY="", GOOGLE_API_KEY="")
def test_streamed_think_without_a_key_ends_with_end_carrying_the_answer(llm_kernel) -> None:
    (frame,) = _think(llm_kernel, b'{"prompt": "hi", "stream": true}')
    assert frame.flags == END
    answer = json.loads(bytes(frame.payload))
    assert answer["success"] is False and answer["content"] is None
    assert answer["error"]["type"] == "not_configured" and "GEMINI_API_KEY" in answer["error"]["message"]


@pytest.mark.llm_env(GEMINI_API_KEY="", GOOGLE_API_KEY="")
def test_unstreamed_think_without_a_key_is_a_plain_reply(llm_kernel) -> None:
    (frame,) = _think(llm_kernel, b'{"prompt": "hi"}')
    assert frame.flags == REPLY
    assert json.loads(bytes(frame.payload))["error"]["type"] == "not_configured"
    (plain,) = _think(llm_kernel, b"hi")
    assert plain.flags == REPLY
    assert json.loads(bytes(plain.payload))["error"].startswith("not_configured: ")


def test_streamed_think_sends_chunks_then_an_end_without_the_text_again(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply("Hello there", chunks=2))
    *chunks, end = _think(llm_kernel, b'{"prompt": "hi", "stream": true}')
    assert chunks and all(f.flags == STREAM for f in chunks)
    assert "".join(json.loads(bytes(f.payload))["text"] for f in chunks) == "Hello there"
    assert end.flags == END and b"Hello" not in bytes(end.payload)
    answer = json.loads(bytes(end.payload))
    assert answer["success"] is True and "content" not in answer
    assert answer["turn"]["parts"] == [{"content_chars": len("Hello there")}]


def test_the_sdk_rebuilds_a_streamed_answer_as_the_unstreamed_one(llm_kernel) -> None:
    text = "Let me look that up. "
    reply = call_reply(("lookup", {"q": "x"}), text=text, chunks=3, thought_signature="c2ln")
    with llm_kernel.client() as c:
        llm_kernel.fake.script(reply)
        whole = c.think("find x", functions=[{"name": "lookup", "parameters": {"type": "object"}}])
        llm_kernel.fake.script(reply)
        stream = c.think_stream("find x",
                                functions=[{"name": "lookup", "parameters": {"type": "object"}}])
        assert "".join(stream) == text
    assert stream.reply is not None
    # The fake numbers its call ids per request; all else is the same answer.
    assert _without_ids(stream.reply) == _without_ids(whole) and whole.content == text
    assert whole.turn is not None and whole.turn["parts"][0] == {"text": text}
    assert stream.function_calls == stream.reply.function_calls


def _without_ids(reply: ThinkReply) -> str:
    return re.sub(r"'call_\d+'", "'call_n'", repr(reply))


def test_malformed_streamed_think_ends_with_one_error(llm_kernel) -> None:
    (frame,) = _think(llm_kernel, b'{"prompt": "hi", "stream": true, "temperature": 9}')
    assert frame.flags == ERROR
    assert json.loads(bytes(frame.payload))["code"] == "invalid_argument"
