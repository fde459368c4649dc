"""The model API's JSON both ways: msgspec where it can, and what ujson took still taken."""
from __future__ import annotations

import math

import ujson

from agentos.llm import http


def test_an_answer_reads_as_ujson_read_it() -> None:
    answer = b'{"candidates": [{"content": {"parts": [{"text": "caf\\u00e9 \\/ x"}]}}], "n": 12345678901234567890}'
    assert http._loads(answer) == ujson.loads(answer)


def test_what_strict_json_refuses_is_still_read() -> None:
    # NaN, a lone surrogate, a number past float range: ujson took them, so a model's answer
    # holding one means what it meant before.
    assert math.isnan(http._loads(b'{"x": NaN}')["x"])
    assert http._loads(b'{"t": "\\ud800"}') == {"t": "\ud800"}
    assert http._loads(b'{"x": 1e400}') == {"x": math.inf}


def test_a_request_body_is_the_same_json() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "caf\u00e9 / \u2028 \"q\""}]}],
            "generationConfig": {"temperature": 0.25, "maxOutputTokens": 12}}
    encoded = http._encode(body)
    assert encoded is not None and ujson.loads(encoded) == body
    assert http._encode(None) is None


def test_a_lone_surrogate_goes_out_escaped() -> None:
    # A turn read from an answer (ujson takes "\ud800") and sent back in the next request.
    body = {"contents": [{"role": "model", "parts": [{"text": "a\ud800b"}]}]}
    assert http._encode(body) == b'{"contents":[{"role":"model","parts":[{"text":"a\\ud800b"}]}]}'
