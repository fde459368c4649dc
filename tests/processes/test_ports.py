"""EXPOSE against a real kernel: an agent whose network is false serves HTTP on its own
127.0.0.1:8000, and the host reaches it through the exposure (Unix socket and tcp): whole
answers, many connections at once, large bodies both ways, a server that hangs up, an agent
killed mid-connection, UNEXPOSE and a caller hanging up, and nothing left behind."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.errors import Busy, InvalidArgument, NotFound
from agentos.testing.kernel import KernelProcess

from .conftest import agent


@pytest.fixture(scope="module")
def kernel(shared_kernel: KernelProcess) -> Iterator[Client]:
    with shared_kernel.client(timeout=60) as client:
        yield client


def _server(kernel: Client, name: str) -> dict[str, Any]:
    started = kernel.spawn(name, agent("port_server"), sandboxed=True, network=False, limits={"pids": 64})
    kernel.wait(id=started["id"], until="ready", timeout=60)
    return started


@pytest.fixture(scope="module")
def server(kernel: Client) -> Iterator[dict[str, Any]]:
    started = _server(kernel, "web")
    try:
        yield started
    finally:
        kernel.kill(id=started["id"], grace=0)


def _connect(address: str) -> socket.socket:
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
    sock.settimeout(60)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def _http(address: str, method: str, path: str, body: bytes = b"") -> bytes:
    """The body of one answer (the connection closes after it)."""
    request = f"{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n" \
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with _connect(address) as sock, concurrent.futures.ThreadPoolExecutor(1) as writer:
        # Written while the answer is read: an echo answers as it reads, and backpressure holds.
        sent = writer.submit(sock.sendall, request)
        answer = _read_all(sock)
        sent.result()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
    return content


def test_the_host_reaches_a_server_on_the_agents_own_loopback(kernel: Client, server: dict[str, Any]) -> None:
    with kernel.expose(server["name"], 8000, tcp=True) as exposure:
        assert exposure.address == exposure.tcp and exposure.tcp.startswith("127.0.0.1:")
        assert _http(exposure.path, "GET", "/hello") == b"hello from web"
        assert _http(exposure.tcp, "GET", "/hello") == b"hello from web"
        directory = Path(exposure.path).parent
        assert (os.stat(directory).st_mode & 0o777, os.stat(directory).st_uid) == (0o700, os.getuid())
        listed = kernel.exposures(server["name"])
        assert [(e["id"], e["port"], e["accepted"]) for e in listed] == [(exposure.id, 8000, 2)]
    result = exposure.result
    assert result is not None and result["ended"] == "unexposed" and result["bytes_out"] > 0
    # Its network is still its own: the host's loopback is not the agent's.
    probe = kernel.exec(server["name"], ["python3", "-c", "import socket; socket.create_connection("
                                         f"('127.0.0.1', {exposure.tcp.rsplit(':', 1)[1]}), 5)"])
    assert b"ConnectionRefusedError" in probe.stderr


def test_many_connections_at_once(kernel: Client, server: dict[str, Any]) -> None:
    with kernel.expose(server["name"], 8000) as exposure:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda n: _http(exposure.path, "GET", f"/bytes/{100_000 + n}"), range(32)))
        assert [len(b) for b in bodies] == [100_000 + n for n in range(32)]
        assert kernel.exposures(id=server["id"])[0]["accepted"] == 32


def test_large_bodies_both_ways(kernel: Client, server: dict[str, Any]) -> None:
    payload = os.urandom(1 << 20) * 24  # 24 MiB
    with kernel.expose(server["name"], 8000) as exposure:
        assert _http(exposure.path, "POST", "/echo", payload) == payload
        assert len(_http(exposure.path, "GET", f"/bytes/{32 << 20}")) == 32 << 20
    assert exposure.result is not None
    assert exposure.result["bytes_in"] > len(payload) and exposure.result["bytes_out"] > len(payload) + (32 << 20)


def test_a_server_that_hangs_up_ends_only_that_connection(kernel: Client, server: dict[str, Any]) -> None:
    with kernel.expose(server["name"], 8000) as exposure:
        with _connect(exposure.path) as sock:
            sock.sendall(b"GET /close HTTP/1.1\r\nHost: agent\r\n\r\n")
            assert _read_all(sock) == b""
        assert _http(exposure.path, "GET", "/hello") == b"hello from web"


def test_nothing_listening_closes_the_connection(kernel: Client, server: dict[str, Any]) -> None:
    with kernel.expose(server["name"], 9) as exposure:
        with _connect(exposure.path) as sock:
            assert _read_all(sock) == b""
        assert kernel.exposures(id=server["id"])[0]["status"] == "open"


def test_an_agent_killed_mid_connection(kernel: Client) -> None:
    victim = _server(kernel, "web-victim")
    exposure = kernel.expose(victim["name"], 8000)
    sock = _connect(exposure.path)
    try:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: agent\r\n\r\n")
        kernel.kill(id=victim["id"], grace=0)
        try:
            assert _read_all(sock) == b""
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    assert exposure.wait()["ended"] == "agent ended"
    assert not Path(exposure.path).parent.exists()
    with pytest.raises(NotFound):
        kernel.unexpose(exposure.id)


def test_unexpose_and_a_caller_hanging_up_leave_nothing(shared_kernel: KernelProcess, kernel: Client,
                                                        server: dict[str, Any]) -> None:
    assert shared_kernel.proc is not None
    kernel_pid = shared_kernel.pid
    kernel.exposures()  # a round trip: earlier tests' exposures are gone
    before = len(os.listdir(f"/proc/{kernel_pid}/fd"))
    exposure = kernel.expose(server["name"], 8000, tcp=True)
    assert len(_helpers(kernel_pid)) == 1
    idle = _connect(exposure.path)  # a connection still open when it ends
    # Accepted, not only queued: a listener that closes resets what it never accepted.
    _until(lambda: kernel.exposures(id=server["id"])[0]["connections"] == 1)
    assert kernel.unexpose(exposure.id)["ended"] == "unexposed"
    assert exposure.wait()["status"] == "closed"
    assert _read_all(idle) == b""
    idle.close()
    with pytest.raises(FileNotFoundError):
        _connect(exposure.path)
    assert not Path(exposure.path).parent.exists()

    with shared_kernel.client(timeout=60) as other:
        gone = other.expose(server["name"], 8000)
    _until(lambda: not Path(gone.path).exists())
    assert kernel.exposures() == []
    _until(lambda: not _helpers(kernel_pid))
    _until(lambda: len(os.listdir(f"/proc/{kernel_pid}/fd")) == before)


def test_malformed_fields_are_named(kernel: Client, server: dict[str, Any]) -> None:
    for payload, field in [({"name": server["name"], "port": 0}, "port"),
                           ({"name": server["name"], "port": 65536}, "port"),
                           ({"name": server["name"], "port": "80"}, "port"),
                           ({"name": server["name"]}, "port"),
                           ({"name": server["name"], "port": 80, "tcp": "yes"}, "tcp")]:
        with pytest.raises(InvalidArgument) as caught:
            list(kernel._stream(0x1D, payload))
        assert caught.value.details.get("field") == field, payload
    with pytest.raises(InvalidArgument) as caught:
        kernel.unexpose("not-an-id")
    assert caught.value.details.get("field") == "exposure"
    with pytest.raises(NotFound):
        kernel.expose("no-such-agent", 8000)


def test_exposures_per_agent_are_capped(kernel: Client, server: dict[str, Any]) -> None:
    opened = []
    try:
        with pytest.raises(Busy):
            for _ in range(17):  # processes.exposures_per_agent defaults to 16
                opened.append(kernel.expose(server["name"], 8000))
        assert len(opened) == 16
    finally:
        for exposure in opened:
            exposure.close()


def _helpers(kernel_pid: int) -> list[int]:
    """The kernel's live netns helper processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == kernel_pid and fields[0] != "Z" and b"netns.py" in cmdline:
            found.append(int(entry))
    return found


def _until(condition: Any, limit: float = 30.0) -> None:
    """Poll ``condition`` (the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_the_cli_holds_an_exposure_until_ctrl_c(shared_kernel: KernelProcess, kernel: Client,
                                                 server: dict[str, Any]) -> None:
    command = subprocess.Popen([sys.executable, "-m", "agentos", "expose", server["name"], "8000",
                                "--socket", str(shared_kernel.socket_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert command.stdout is not None
        path = command.stdout.readline().strip()
        assert _http(path, "GET", "/hello") == b"hello from web"
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=60) == 130
    finally:
        command.kill()
        command.wait()
    _until(lambda: not Path(path).exists())


def test_a_sandbox_exposes_a_server_it_runs(kernel: Client) -> None:
    with kernel.sandbox(limits={"pids": 32}) as sb:
        sb.exec_start(["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/etc"])
        with sb.expose(8000) as exposure:
            _until(lambda: _answers(exposure.path))
            assert b"hostname" in _http(exposure.path, "GET", "/")


def _answers(path: str) -> bool:
    """Whether the server answers yet (before it listens, the kernel hangs up on the request)."""
    with _connect(path) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return _read_all(sock).startswith(b"HTTP/1.0 200")
        except (ConnectionResetError, BrokenPipeError):
            return False


def test_a_server_in_use_through_its_exposure_does_not_idle_out(kernel: Client) -> None:
    """Connections through an exposure are activity for ``idle_timeout``: requests 0.2 s apart
    for three idle periods keep the agent running (it makes no syscall of its own meanwhile);
    once nobody uses it, it ends ``idle_timeout``."""
    started = kernel.spawn("idle-web", agent("port_server"), sandboxed=True, network=False,
                           limits={"pids": 64}, idle_timeout="2s")
    try:
        kernel.wait(id=started["id"], until="ready", timeout=60)
        with kernel.expose(started["name"], 8000) as exposure:
            until = time.monotonic() + 6
            while time.monotonic() < until:
                assert _http(exposure.path, "GET", "/hello") == b"hello from idle-web"
                time.sleep(0.2)
            assert [a["status"] for a in kernel.list_agents(name="idle-web")] == ["running"]
        ended = kernel.wait(id=started["id"], timeout=60)
        assert (ended["status"], ended["reason"]) == ("timed_out", "idle_timeout")
    finally:
        for running in kernel.list_agents(name="idle-web", status="running"):
            kernel.kill(id=running["id"], grace=0)
