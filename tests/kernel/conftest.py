from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import ujson

from agentos.protocol import FrameDecoder, encode_frame
from agentos.testing.kernel import KernelProcess

DEMO = Path(__file__).with_name("demo_kernel.py")
INSPECTED = Path(__file__).with_name("inspected_kernel.py")


def _kernel_of(script: Path, tmp_path: Path, allow_tracebacks: bool, env: dict[str, str] | None = None):
    k = KernelProcess(tmp_path / "k", command=[sys.executable, str(script)], env=env).start()
    try:
        yield k
    finally:
        k.stop_checked(allow_tracebacks=allow_tracebacks)


@pytest.fixture
def demo_kernel(tmp_path):
    """A kernel with the test service of demo_kernel.py; may log tracebacks (FAIL does)."""
    yield from _kernel_of(DEMO, tmp_path, allow_tracebacks=True)


@pytest.fixture
def inspected_kernel(tmp_path):
    """The demo kernel, and a service that tells what dispatch did (inspected_kernel.py); its
    telemetry off, whatever OTEL_* variables this environment holds (its hooks are counted)."""
    yield from _kernel_of(INSPECTED, tmp_path, allow_tracebacks=False, env={"OTEL_SDK_DISABLED": "true"})


class RawConn:
    """A bare socket speaking frames by hand, for feeding the kernel bad bytes."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(30)
        self.decoder = FrameDecoder()
        self.frames: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, op: int, rid: int, payload: bytes = b"") -> None:
        self.send(encode_frame(op, rid, payload))

    def read_frame(self):
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def read_error(self) -> dict:
        frame = self.read_frame()
        assert frame is not None, "kernel closed without an error frame"
        assert frame.flags == 0x03, frame
        return ujson.loads(bytes(frame.payload))

    def at_eof(self) -> bool:
        return self.read_frame() is None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(kernel):
    conns: list[RawConn] = []

    def connect() -> RawConn:
        c = RawConn(kernel.socket_path)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


def kernel_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def kernel_rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
