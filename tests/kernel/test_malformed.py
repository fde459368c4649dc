"""Bad input: a specific error, the bad client is cut off, the kernel and others carry on."""
from __future__ import annotations

import json
import socket
import time

import pytest

from agentos.protocol import HEADER_SIZE, encode_frame

from .conftest import kernel_fds, kernel_rss

BAD_HEADERS = {
    "bad magic": (b"XY\x01\x00" + bytes(12), "bad magic 0x5958"),
    "bad version": (b"AO\x07\x00" + bytes(12), "unsupported protocol version 7"),
    "huge length": (encode_frame(0, 1, b"")[:12] + (2**31).to_bytes(4, "little"),
                    "payload length 2147483648 exceeds the maximum of 16777216"),
    "reserved set": (b"AO\x01\x00\x00\x00\x01\x00" + bytes(8), "reserved header field"),
    "unknown flag": (b"AO\x01\x00\x40\x00" + bytes(10), "unknown flag bits 0x0040"),
    "flags on a request": (encode_frame(0, 9, b"", 0x01), "request 9 has flags 0x1"),
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad magic"),
}


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_bad_frame_gets_protocol_error_then_disconnect(kernel, raw, name) -> None:
    data, message = BAD_HEADERS[name]
    bystander = kernel.client()
    bad = raw()
    bad.send(data)
    err = bad.read_error()
    assert err["code"] == "protocol_error"
    assert message in err["message"]
    assert bad.at_eof()
    assert bystander.noop(b"still here") == b"still here"
    assert kernel.client().hello()["kernel"] == "agentos"


def test_huge_length_refused_before_payload_is_sent(kernel, raw) -> None:
    bad = raw()
    bad.send(encode_frame(0, 1, b"")[:12] + (64 * 1024 * 1024).to_bytes(4, "little"))
    assert bad.read_error()["code"] == "protocol_error"


def test_frames_before_the_bad_one_are_answered(kernel, raw) -> None:
    c = raw()
    c.send(encode_frame(0, 1, b"a") + encode_frame(0, 2, b"b") + b"XXXX" + bytes(12))
    assert [bytes(c.read_frame().payload) for _ in range(2)] == [b"a", b"b"]
    assert c.read_error()["code"] == "protocol_error"
    assert c.at_eof()


def test_unknown_opcode_is_not_implemented_and_connection_lives(kernel, raw) -> None:
    c = raw()
    c.request(0xEE, 5, b"{}")
    frame = c.read_frame()
    assert (frame.opcode, frame.flags, frame.request_id) == (0xEE, 0x03, 5)
    assert b"not_implemented" in bytes(frame.payload)
    c.request(0, 6, b"after")
    assert bytes(c.read_frame().payload) == b"after"


@pytest.mark.parametrize("payload", [b"{not json", b'{"x": NaN}', b'{"x": Infinity}', b"[1]",
                                     b'"\\udfff"', b'{"unknown": 1}'])
def test_invalid_json_payload_is_invalid_argument(kernel, raw, payload) -> None:
    c = raw()
    c.request(0x02, 1, payload)
    # Every payload is strict JSON of the syscall's declared shape, HELLO's (empty) too.
    frame = c.read_frame()
    assert frame.flags == 0x03 and frame.request_id == 1
    assert json.loads(bytes(frame.payload))["code"] == "invalid_argument"


def _settled_fds(kernel) -> int:
    """The kernel's fd count once every service has opened what it opens on first use."""
    with kernel.client() as warm:
        warm.hello()
        warm.noop(b"warm")
    count = -1
    while count != kernel_fds(kernel.pid):
        count = kernel_fds(kernel.pid)
        time.sleep(0.2)
    return count


def test_truncated_frame_then_hangup(kernel, raw) -> None:
    pid = kernel.pid
    baseline = _settled_fds(kernel)
    for cut in (1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 3):
        c = raw()
        c.send(encode_frame(0, 1, b"abcdefgh")[:cut])
        c.close()
    client = kernel.client()
    assert client.noop(b"ok") == b"ok"
    client.close()
    _wait_for(lambda: kernel_fds(pid) == baseline, f"fds back to {baseline}")


def test_slowloris_does_not_delay_others(kernel, raw) -> None:
    slow = [raw() for _ in range(20)]
    wire = encode_frame(0, 1, b"x" * 100)
    for i, c in enumerate(slow):
        c.send(wire[: 1 + i % (len(wire) - 1)])
    client = kernel.client()
    for i in range(200):
        assert client.noop(str(i).encode()) == str(i).encode()
    for c in slow:  # each can still complete its frame and get its answer
        c.send(wire[1 + slow.index(c) % (len(wire) - 1):])
        assert bytes(c.read_frame().payload) == b"x" * 100


def test_client_that_never_reads_is_throttled(kernel, raw) -> None:
    pid = kernel.pid
    rss_before = kernel_rss(pid)
    hog = raw()
    hog.sock.setblocking(False)
    frame = encode_frame(0, 1, b"y" * 65536)
    sent = 0
    # Keep writing valid frames (resuming mid-frame after a short send) until the
    # kernel stops reading us and our socket buffer fills up.
    stalls = 0
    while sent < 512 * 1024 * 1024 and stalls < 50:
        offset = sent % len(frame)
        try:
            sent += hog.sock.send(frame[offset:])
            stalls = 0
        except BlockingIOError:
            stalls += 1
            time.sleep(0.01)
    assert sent < 256 * 1024 * 1024, "kernel kept reading a client that never reads"
    growth = kernel_rss(pid) - rss_before
    assert growth < 64 * 1024 * 1024, f"kernel grew by {growth} bytes for one stalled client"
    other = kernel.client()
    assert other.noop(b"unaffected") == b"unaffected"


def test_many_connections_leave_no_fds(kernel) -> None:
    pid = kernel.pid
    baseline = _settled_fds(kernel)
    socks = []
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(kernel.socket_path))
        socks.append(s)
    client = kernel.client()
    assert client.noop(b"x") == b"x"
    _wait_for(lambda: kernel_fds(pid) >= baseline + 200, "kernel to accept all")
    for s in socks:
        s.close()
    client.close()
    _wait_for(lambda: kernel_fds(pid) == baseline, f"fds back to {baseline}")


def _wait_for(cond, what: str, limit: float = 20.0) -> None:
    # Waiting for the kernel to notice hang-ups; the limit only bounds a broken run.
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)
