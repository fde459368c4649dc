"""HELLO's ``max_payload``: the kernel never sends a client a frame longer than it declared.

Raw frames, so nothing in the SDK hides what the kernel sends: a reply over the declared
limit is an ERROR frame (``too_large``) for that one request, and the connection goes on.
"""
from __future__ import annotations

import asyncio

import pytest
import ujson

from agentos import AsyncClient, Client
from agentos.errors import TooLarge
from agentos.protocol import Op, encode_frame
from agentos.protocol.requests import MIN_DECLARED_PAYLOAD

BIG = "x" * (200 * 1024)


def _json(frame) -> dict:
    return ujson.loads(bytes(frame.payload))


def test_a_reply_over_the_declared_limit_is_too_large_and_the_connection_goes_on(kernel, raw) -> None:
    with kernel.client() as c:
        c.store("big", BIG)
        c.store("small", "ok")
    conn = raw()
    # Undeclared, the default limit (16 MiB) applies: the value arrives whole.
    conn.request(Op.FETCH, 1, ujson.dumps({"key": "big"}).encode())
    assert _json(conn.read_frame())["value"] == BIG

    conn.request(Op.HELLO, 2, ujson.dumps({"max_payload": MIN_DECLARED_PAYLOAD}).encode())
    hello = conn.read_frame()
    assert hello.request_id == 2 and hello.flags == 0x01
    conn.request(Op.FETCH, 3, ujson.dumps({"key": "big"}).encode())
    refused = conn.read_frame()
    assert refused.request_id == 3 and refused.flags == 0x03
    error = _json(refused)
    assert error["code"] == "too_large"
    assert error["details"]["limit"] == MIN_DECLARED_PAYLOAD
    assert error["details"]["size"] > len(BIG)
    assert f"{MIN_DECLARED_PAYLOAD} bytes" in error["message"] and "FETCH" in error["message"]

    # The same connection still works, for small replies and for NOOP.
    conn.request(Op.FETCH, 4, ujson.dumps({"key": "small"}).encode())
    assert _json(conn.read_frame())["value"] == "ok"
    conn.request(Op.NOOP, 5, b"ping")
    pong = conn.read_frame()
    assert (pong.request_id, bytes(pong.payload)) == (5, b"ping")


def test_a_limit_pipelined_with_the_request_is_honoured(kernel, raw) -> None:
    """The SDK writes its HELLO and its first request at once: the HELLO applies to it."""
    with kernel.client() as c:
        c.store("big", BIG)
    conn = raw()
    conn.send(b"".join([
        _frame(Op.HELLO, 7, {"max_payload": MIN_DECLARED_PAYLOAD}),
        _frame(Op.FETCH, 8, {"key": "big"}),
    ]))
    frames = {f.request_id: f for f in (conn.read_frame(), conn.read_frame())}
    assert _json(frames[8])["code"] == "too_large"


def test_a_limit_below_the_minimum_or_not_a_number_is_invalid(kernel, raw) -> None:
    conn = raw()
    for rid, value in enumerate([MIN_DECLARED_PAYLOAD - 1, -1, 1 << 32, "16Mi", None], start=1):
        conn.send(_frame(Op.HELLO, rid, {"max_payload": value}))
        error = conn.read_error()
        assert error["code"] == "invalid_argument", (value, error)
        assert "max_payload" in error["message"]


def test_the_sdk_declares_its_limit_and_gets_too_large_then_carries_on(kernel) -> None:
    with kernel.client() as c:
        c.store("big", BIG)
    with Client(kernel.socket_path, max_payload=MIN_DECLARED_PAYLOAD) as small:
        with pytest.raises(TooLarge) as refused:
            small.fetch("big")
        assert refused.value.details["limit"] == MIN_DECLARED_PAYLOAD
        assert refused.value.details["size"] > len(BIG)
        assert small.noop(b"still here") == b"still here"
        assert small.store("k", "v") == 1 and small.fetch("k") == "v"


def _frame(op: Op, rid: int, body: object) -> bytes:
    return encode_frame(op, rid, ujson.dumps(body).encode())


def test_the_sdk_never_asks_for_an_echo_over_its_own_limit(kernel) -> None:
    # The kernel echoes NOOP unchecked; an echo over the limit would be a frame the client's
    # decoder must refuse, failing the connection, so the SDK refuses to send it.
    limit = MIN_DECLARED_PAYLOAD
    with Client(kernel.socket_path, max_payload=limit) as small:
        with pytest.raises(TooLarge) as refused:
            small.noop(b"x" * (limit + 1))
        assert refused.value.details == {"size": limit + 1, "limit": limit}
        with pytest.raises(TooLarge):
            small.noop_batch([b"a", b"x" * (limit + 1)])
        assert small.noop(b"x" * limit) == b"x" * limit
        assert small.noop_batch([b"a", b"b"]) == [b"a", b"b"]


def test_the_async_sdk_never_asks_for_an_echo_over_its_own_limit(kernel) -> None:
    limit = MIN_DECLARED_PAYLOAD

    async def main() -> None:
        async with await AsyncClient.connect(kernel.socket_path, max_payload=limit) as small:
            with pytest.raises(TooLarge):
                await small.noop(b"x" * (limit + 1))
            assert await small.noop(b"still here") == b"still here"

    asyncio.run(main())
