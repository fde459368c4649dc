"""The SSE decoder accepts every line ending and any chunking of the byte stream."""
from __future__ import annotations

import pytest

from agentos.llm.sse import SSEDecoder

EVENTS = ['{"a": 1}', '{"b": "two words"}', '{"c": [3]}']


def _framed(newline: str) -> bytes:
    return "".join(f"data: {e}{newline}{newline}" for e in EVENTS).encode()


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_every_line_ending_yields_every_event(newline: str) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(_framed(newline)) + decoder.finish() == EVENTS


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_any_split_point_yields_the_same_events(newline: str) -> None:
    data = _framed(newline)
    for cut in range(1, len(data)):
        decoder = SSEDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.finish()
        assert got == EVENTS, f"split at byte {cut}"


def test_byte_by_byte_feeding() -> None:
    data = _framed("\r\n")
    decoder = SSEDecoder()
    got: list[str] = []
    for i in range(len(data)):
        got += decoder.feed(data[i:i + 1])
    assert got + decoder.finish() == EVENTS


def test_multiline_data_comments_and_raw_json_error() -> None:
    decoder = SSEDecoder()
    got = decoder.feed(b": keepalive\n\nevent: x\ndata: {\"a\":\ndata: 1}\n\n"
                       b'{"error": {"code": 500,\n "message": "boom"}}\n\n')
    assert got == ['{"a":\n1}', '{"error": {"code": 500,\n "message": "boom"}}']


def test_unterminated_last_event_is_delivered_by_finish() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.finish() == ["[DONE]"]
