"""The benchmark references stay correct: the C echo server answers NOOP exactly as
the protocol says, checked through the C load client and through the Python codec."""
from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import ujson

from agentos.protocol import HEADER_SIZE, Flag, Op, codec_py

_HARNESS_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "harness.py"
_spec = importlib.util.spec_from_file_location("agentos_bench_harness", _HARNESS_PATH)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory):
    return harness.build_references(tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def echo(references) -> Iterator:
    server = harness.start_c_echo(references)
    yield server
    server.stop()  # raises if it had to be killed or left its socket


def connect(server) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(server.socket_path))
    return sock


def read_frames(sock: socket.socket, count: int) -> list:
    decoder = codec_py.FrameDecoder()
    frames: list = []
    while len(frames) < count:
        data = sock.recv(65536)
        assert data, f"server closed after {len(frames)} of {count} frames"
        frames += decoder.feed(data)
    assert decoder.buffered == 0
    return frames


def test_noop_echo_through_python_codec(echo) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, more than one read on either side
    with connect(echo) as sock:
        sock.sendall(codec_py.encode_frame(Op.NOOP, 7, b"hello")
                     + codec_py.encode_frame(Op.HELLO, 8)
                     + codec_py.encode_frame(Op.NOOP, 0xFFFFFFFF, big))
        first, second, third = read_frames(sock, 3)
    assert (first.opcode, first.flags, first.request_id, bytes(first.payload)) == \
        (Op.NOOP, Flag.REPLY, 7, b"hello")
    assert (second.opcode, second.flags, second.request_id) == \
        (Op.HELLO, Flag.REPLY | Flag.ERROR, 8)
    assert ujson.loads(bytes(second.payload))["code"] == "not_implemented"
    assert (third.request_id, bytes(third.payload)) == (0xFFFFFFFF, big)


def test_bad_header_closes_only_that_connection(echo) -> None:
    with connect(echo) as bad:
        bad.sendall(b"XX" + codec_py.encode_frame(Op.NOOP, 1)[2:])
        assert bad.recv(HEADER_SIZE) == b""
    with connect(echo) as good:
        good.sendall(codec_py.encode_frame(Op.NOOP, 2, b"still here"))
        (reply,) = read_frames(good, 1)
    assert bytes(reply.payload) == b"still here"


@pytest.mark.parametrize(("options", "frames"), [
    ({"mode": "sequential", "payload": 100, "requests": 200}, 200),
    ({"mode": "sequential", "procs": 2, "requests": 50}, 100),
    ({"mode": "pipelined", "batch": 64, "payload": 3000, "requests": 640}, 640),
], ids=["sequential", "two-procs", "pipelined"])
def test_load_client_verifies_replies(references, echo, options, frames) -> None:
    result = harness.run_load_client(references, echo.socket_path, warmup=0, verify=True,
                                     **options)
    assert result["frames"] == frames
    assert result["frames_per_s"] > 0 and 0 < result["p50_ns"] <= result["p99_ns"]


def test_load_client_fails_on_a_server_that_does_not_echo(references, tmp_path) -> None:
    # A server that reads the request and hangs up: the client must fail, not report results.
    path = tmp_path / "closer.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()

        def hang_up() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(HEADER_SIZE)

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            with pytest.raises(RuntimeError, match="server closed"):
                harness.run_load_client(references, path, requests=1, warmup=0)
        finally:
            thread.join(10)
