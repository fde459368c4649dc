"""Every malformed field of a messaging or state syscall is ``invalid_argument``, never
``internal``, and costs the kernel no traceback. Sent as raw frames: no client-side
encoder gets the chance to clean them up (NaN, lone surrogates, huge integers)."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.protocol import Flag, FrameDecoder, Op, encode_frame
from agentos.testing.kernel import KernelProcess

BIG = str(10**30)
LONE = '"\\udfff"'  # JSON for a lone surrogate, which UTF-8 cannot carry

CASES: list[tuple[Op, str]] = [
    # SEND
    (Op.SEND, '{"to": [1], "body": 1}'), (Op.SEND, f'{{"to": {LONE}, "body": 1}}'),
    (Op.SEND, '{"to": "", "body": 1}'), (Op.SEND, '{"to": 5, "body": 1}'),
    (Op.SEND, '{"to": "x"}'), (Op.SEND, f'{{"to": "{"x" * 5000}", "body": 1}}'),
    (Op.SEND, f'{{"to": "x", "body": {LONE}}}'), (Op.SEND, '{"to": "x", "body": NaN}'),
    (Op.SEND, '[1]'), (Op.SEND, '"to"'), (Op.SEND, '{"to": '),
    # RECV
    (Op.RECV, '{"timeout": NaN}'), (Op.RECV, '{"timeout": Infinity}'), (Op.RECV, '{"timeout": -Infinity}'),
    (Op.RECV, '{"timeout": -1}'), (Op.RECV, '{"timeout": [1]}'), (Op.RECV, '{"timeout": 1e308}'),
    (Op.RECV, f'{{"timeout": {BIG}}}'), (Op.RECV, '{"timeout": true}'), (Op.RECV, '{"timeout": "soon"}'),
    (Op.RECV, '{"timeout": 0, "name": [1]}'), (Op.RECV, f'{{"timeout": 0, "name": {LONE}}}'),
    (Op.RECV, '{"timeout": 0, "name": "bad name"}'), (Op.RECV, '{"timeout": 0, "ack": [1]}'),
    (Op.RECV, '{"timeout": 0, "ack": "yes"}'), (Op.RECV, '{"timeout": 0, "max_deliveries": 0}'),
    (Op.RECV, '{"timeout": 0, "max_deliveries": 1.5}'), (Op.RECV, '{"timeout": 0, "max_deliveries": true}'),
    (Op.RECV, f'{{"timeout": 0, "max_deliveries": {BIG}}}'),
    # DEAD_LETTERS
    (Op.DEAD_LETTERS, '{"action": "eat"}'), (Op.DEAD_LETTERS, '{"action": 1}'),
    (Op.DEAD_LETTERS, '{"limit": 0}'), (Op.DEAD_LETTERS, '{"limit": NaN}'), (Op.DEAD_LETTERS, '{"limit": "5"}'),
    (Op.DEAD_LETTERS, '{"mailbox": ""}'), (Op.DEAD_LETTERS, f'{{"mailbox": {LONE}}}'),
    (Op.DEAD_LETTERS, '{"mailbox": [1]}'), (Op.DEAD_LETTERS, '{"name": "bad name"}'),
    (Op.DEAD_LETTERS, '{"action": "requeue"}'), (Op.DEAD_LETTERS, '{"action": "drop", "ids": []}'),
    (Op.DEAD_LETTERS, f'{{"action": "requeue", "ids": [{BIG}]}}'),
    (Op.DEAD_LETTERS, '{"action": "requeue", "ids": [true]}'), (Op.DEAD_LETTERS, '[1]'),
    # ACK
    (Op.ACK, f'{{"ids": [{BIG}]}}'), (Op.ACK, '{"ids": []}'), (Op.ACK, '{"ids": "1"}'),
    (Op.ACK, '{"ids": [-1]}'), (Op.ACK, '{"ids": [1.5]}'), (Op.ACK, '{"ids": [true]}'),
    (Op.ACK, '{"id": [1]}'), (Op.ACK, '{}'), (Op.ACK, '{"ids": [1], "name": 5}'),
    (Op.ACK, f'{{"ids": [1], "name": {LONE}}}'),
    # REGISTER
    (Op.REGISTER, f'{{"name": {LONE}}}'), (Op.REGISTER, '{"name": 1}'), (Op.REGISTER, '{"name": ""}'),
    (Op.REGISTER, '{"name": "a b"}'), (Op.REGISTER, f'{{"name": "{"x" * 65}"}}'),
    (Op.REGISTER, '{"name": "ok\\n"}'), (Op.REGISTER, '{"name": null}'), (Op.REGISTER, '{}'),
    # BROADCAST
    (Op.BROADCAST, '{}'), (Op.BROADCAST, f'{{"body": {LONE}}}'), (Op.BROADCAST, '{"body": Infinity}'),
    # SUBSCRIBE
    (Op.SUBSCRIBE, '{"topics": [[1]]}'), (Op.SUBSCRIBE, '{"topics": []}'),
    (Op.SUBSCRIBE, '{"topics": ["bad topic"]}'), (Op.SUBSCRIBE, '{"topics": ["a..b"]}'),
    (Op.SUBSCRIBE, '{"topics": [{"a": 1}]}'), (Op.SUBSCRIBE, '{"topics": 5}'),
    (Op.SUBSCRIBE, f'{{"topics": ["{"x" * 300}"]}}'), (Op.SUBSCRIBE, f'{{"topics": [{LONE}]}}'),
    (Op.SUBSCRIBE, '{"topics": ["ok\\n"]}'),
    # UNSUBSCRIBE
    (Op.UNSUBSCRIBE, '{"subscription": [1]}'), (Op.UNSUBSCRIBE, '{"subscription": "1"}'),
    (Op.UNSUBSCRIBE, f'{{"subscription": {BIG}}}'), (Op.UNSUBSCRIBE, '{"subscription": -1}'),
    (Op.UNSUBSCRIBE, '{"subscription": true}'),
    # PUBLISH
    (Op.PUBLISH, '{"topic": [1]}'), (Op.PUBLISH, '{"topic": ""}'), (Op.PUBLISH, '{"topic": "a b"}'),
    (Op.PUBLISH, f'{{"topic": {LONE}}}'), (Op.PUBLISH, f'{{"topic": "a", "data": {LONE}}}'),
    (Op.PUBLISH, '{"topic": "a.*"}'), (Op.PUBLISH, '{"topic": "a", "data": NaN}'),
    # STORE
    (Op.STORE, '{"key": [1], "value": 1}'), (Op.STORE, '{"key": "", "value": 1}'),
    (Op.STORE, f'{{"key": {LONE}, "value": 1}}'), (Op.STORE, '{"key": "k"}'),
    (Op.STORE, '{"key": "k", "value": 1, "ttl": NaN}'), (Op.STORE, '{"key": "k", "value": 1, "ttl": [1]}'),
    (Op.STORE, '{"key": "k", "value": 1, "ttl": -1}'), (Op.STORE, '{"key": "k", "value": 1, "ttl": 1e308}'),
    (Op.STORE, f'{{"key": "k", "value": 1, "ttl": {BIG}}}'), (Op.STORE, '{"key": "k", "value": 1, "ttl": "5"}'),
    (Op.STORE, '{"key": "k", "value": 1, "scope": [1]}'), (Op.STORE, '{"key": "k", "value": 1, "scope": "all"}'),
    (Op.STORE, '{"key": "k", "value": 1, "agent": [1]}'), (Op.STORE, f'{{"key": "k", "value": 1, "agent": {LONE}}}'),
    (Op.STORE, f'{{"key": "k", "value": {LONE}}}'), (Op.STORE, '{"key": "k", "value": Infinity}'),
    # FETCH, DELETE
    (Op.FETCH, '{"key": 5}'), (Op.FETCH, f'{{"key": {LONE}}}'), (Op.FETCH, '{"key": "k", "scope": {}}'),
    (Op.FETCH, '{}'), (Op.DELETE, '{"key": null}'), (Op.DELETE, f'{{"key": {LONE}}}'),
    # KEYS
    (Op.KEYS, f'{{"limit": {BIG}}}'), (Op.KEYS, '{"limit": [1]}'), (Op.KEYS, '{"limit": 0}'),
    (Op.KEYS, '{"limit": -1}'), (Op.KEYS, '{"limit": 1.5}'), (Op.KEYS, '{"limit": true}'),
    (Op.KEYS, '{"limit": NaN}'), (Op.KEYS, '{"prefix": 1}'), (Op.KEYS, f'{{"prefix": {LONE}}}'),
    (Op.KEYS, '{"scope": [1]}'),
    # CAS
    (Op.CAS, '{"key": "k", "value": 1, "ttl": NaN}'), (Op.CAS, '{"key": [1], "value": 1}'),
    (Op.CAS, '{"key": "k"}'), (Op.CAS, f'{{"key": "k", "value": 1, "expected": {LONE}}}'),
    (Op.CAS, '{"key": "k", "value": 1, "ttl": Infinity}'), (Op.CAS, '{"key": "k", "value": 1, "scope": 7}'),
]


class RawClient:
    """Frames in, frames out: the payload bytes are exactly what the test wrote."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder()
        self.request_id = 0

    def call(self, op: int, payload: bytes) -> tuple[int, dict]:
        """``(flags, payload as JSON)`` of the request's final frame."""
        self.request_id += 1
        self.sock.sendall(encode_frame(op, self.request_id, payload))
        while True:
            for frame in self.decoder.feed(self.sock.recv(65536)):
                assert frame.request_id == self.request_id
                if frame.flags & Flag.STREAM and not frame.flags & (Flag.END | Flag.ERROR):
                    continue
                return frame.flags, json.loads(bytes(frame.payload) or b"null")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    k = KernelProcess(tmp_path_factory.mktemp("malformed") / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def raw(shared_kernel: KernelProcess) -> Iterator[RawClient]:
    client = RawClient(shared_kernel.socket_path)
    yield client
    client.close()


@pytest.mark.parametrize(("op", "payload"), CASES, ids=[f"{op.name}-{i}" for i, (op, _) in enumerate(CASES)])
def test_malformed_field_is_invalid_argument(shared_kernel: KernelProcess, raw: RawClient,
                                             op: Op, payload: str) -> None:
    flags, reply = raw.call(op, payload.encode())
    assert flags & Flag.ERROR, reply
    assert reply["code"] == "invalid_argument", reply
    assert "Traceback" not in shared_kernel.log()
    # The connection and the kernel still serve.
    assert raw.call(Op.HELLO, b"")[1]["version"]
