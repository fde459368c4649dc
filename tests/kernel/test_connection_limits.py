"""Connection limits: a client past a cap, or past the kernel's fds, is told ``busy``, never hung.

Each test drives a real kernel to the limit with real sockets: a lowered
RLIMIT_NOFILE, a client forked as another uid, an agent connecting by path.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.kernel.config import ConnectionLimits, KernelConfig
from agentos.protocol import FrameDecoder, encode_frame
from agentos.testing.kernel import KernelProcess
from tests.permissions.identities import NOBODY, configured_kernel

FLOOD_AGENT = Path(__file__).parent / "agents" / "connection_flood.py"
REPLY, ERROR_REPLY = 0x01, 0x03
#: The kernel's open-file limit in the fd tests: low, so a few dozen clients exhaust it.
HARD_LIMIT = 64
# Sets RLIMIT_NOFILE, then execs the kernel: what a rootless login with a low limit gives it.
WITH_NOFILE = ("import os, resource, sys; "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
               "os.execv(sys.argv[3], sys.argv[3:])")


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)  # generous: a hang shows as a timeout, a slow machine does not fail
    sock.connect(str(path))
    return sock


def read_frame(sock: socket.socket) -> Any:
    decoder = FrameDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "the kernel closed the connection without a frame"
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def noop(sock: socket.socket) -> Any:
    """The kernel's answer to a NOOP: its reply, or the refusal it sent before reading."""
    try:
        sock.sendall(encode_frame(0, 1, b"ping"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # Refused and closed already; the refusal is still there to read.
    return read_frame(sock)


def refusal(frame: Any, sock: socket.socket) -> dict[str, Any]:
    """The connection-level error in ``frame``, checking that the kernel then hung up."""
    assert (frame.opcode, frame.flags, frame.request_id) == (0, ERROR_REPLY, 0), frame
    try:
        rest = sock.recv(1)
    except ConnectionResetError:
        rest = b""  # It closed with our request unread, which resets rather than ends the stream.
    assert rest == b"", "the kernel kept a refused connection open"
    return json.loads(bytes(frame.payload))


def served(sock: socket.socket) -> bool:
    frame = noop(sock)
    return (frame.flags, bytes(frame.payload)) == (REPLY, b"ping")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- out of fds ------------------------------------------------------------------------

@pytest.fixture
def fd_starved_kernel(tmp_path: Path) -> Iterator[KernelProcess]:
    kernel = KernelProcess(tmp_path / "k", command=[
        sys.executable, "-c", WITH_NOFILE, "32", str(HARD_LIMIT),
        sys.executable, "-m", "agentos", "kernel"]).start()
    try:
        yield kernel
    finally:
        kernel.stop_checked()


def test_kernel_raises_its_soft_fd_limit_to_the_hard_limit(fd_starved_kernel: KernelProcess) -> None:
    assert f"open files: up to {HARD_LIMIT} (soft limit raised from 32)" in fd_starved_kernel.log()
    limits = Path(f"/proc/{fd_starved_kernel.pid}/limits").read_text()
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == [str(HARD_LIMIT), str(HARD_LIMIT)]  # soft, hard


def test_out_of_fds_new_clients_get_busy_and_the_kernel_stays_idle(
        fd_starved_kernel: KernelProcess) -> None:
    kernel = fd_starved_kernel
    pid = kernel.pid
    held: list[socket.socket] = []
    try:
        while True:
            assert len(held) < HARD_LIMIT, "the kernel never ran out of fds"
            sock = connect(kernel.socket_path)
            frame = noop(sock)
            if frame.flags != REPLY:
                break
            held.append(sock)
        error = refusal(frame, sock)
        sock.close()
        assert error["code"] == "busy"
        assert error["details"] == {"cap": "open_files", "limit": HARD_LIMIT, "retry_after": 0.5}
        assert f"all {HARD_LIMIT} of its open files in use" in error["message"]

        # Saturated, with clients arriving and left unread: the old kernel spun on its
        # readable backlog at full CPU here, and these clients waited forever.
        before = cpu_seconds(pid)
        waiting = []
        for _ in range(30):
            waiting.append(connect(kernel.socket_path))
            time.sleep(0.1)
        used = cpu_seconds(pid) - before
        for sock in waiting:
            assert refusal(read_frame(sock), sock)["code"] == "busy"
            sock.close()
        assert used < 0.3, f"the kernel used {used:.2f}s of CPU in 3s while out of fds"
        assert kernel.log().count("cannot accept clients (EMFILE") == 1

        # A closed connection frees an fd, and the next client is served at once.
        for sock in held[-3:]:
            sock.close()
        del held[-3:]
        fresh = connect(kernel.socket_path)
        held.append(fresh)
        assert served(fresh)
        assert "accepting clients again" in kernel.log()
        assert all(served(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


# -- the listen backlog -----------------------------------------------------------------

def test_the_listen_backlog_holds_as_many_waiting_clients_as_the_host_allows() -> None:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits[1] > somaxconn + 64, "this test holds a backlog's worth of client sockets"
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits[1], limits[1]))
    waiting: list[socket.socket] = []
    try:
        # All from this test's uid: a per_uid cap over the backlog, so that all are served.
        with configured_kernel({"connections": {"per_uid": 2 * somaxconn}}) as kernel:
            assert f"listen backlog: {somaxconn} clients (net.core.somaxconn)" in kernel.log()
            os.kill(kernel.pid, signal.SIGSTOP)  # it accepts nobody: clients queue in the backlog
            try:
                while Path(f"/proc/{kernel.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
                    time.sleep(0.01)
                while len(waiting) <= somaxconn + 1:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        sock.connect(str(kernel.socket_path))
                    except BlockingIOError:
                        sock.close()
                        break
                    waiting.append(sock)
            finally:
                os.kill(kernel.pid, signal.SIGCONT)
            # A Unix socket's backlog is full once it holds more than the backlog: one more.
            assert len(waiting) == somaxconn + 1
            for sock in waiting[::512]:
                sock.settimeout(60)
                assert served(sock)
    finally:
        for sock in waiting:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


# -- per uid ---------------------------------------------------------------------------

def test_a_uid_over_its_cap_gets_busy_and_others_are_served() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a client under another uid is made with setuid")
    sections = {"permissions": {"uids": {str(NOBODY): ["message"]}}, "connections": {"per_uid": 3}}
    with configured_kernel(sections, world_reachable=True) as kernel:
        with AsUid(NOBODY, kernel.socket_path) as nobody:
            assert nobody.ask("fill") == {"served": 3, "then": {
                "code": "busy", "details": {"cap": "connections.per_uid", "limit": 3},
                "message": f"uid {NOBODY} already has 3 connections to the kernel, its cap "
                           "(connections.per_uid); close one first"}}
            # Another uid is counted apart: root still connects while nobody is at its cap.
            root = connect(kernel.socket_path)
            assert served(root)
            assert nobody.ask("swap") == {"served": True}
            root.close()
        assert kernel.client().noop(b"after") == b"after"


class AsUid:
    """A forked child that drops to ``uid`` and opens connections when asked.

    ``fill`` connects until the kernel refuses, keeping the connections served;
    ``swap`` closes one of them and checks that a new one is then served.
    """

    def __init__(self, uid: int, path: Path) -> None:
        self.uid, self.path = uid, path

    def __enter__(self) -> AsUid:
        to_child, self._ask = os.pipe()
        self._answers, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child reports through the pipe
            os.close(self._ask)
            os.close(self._answers)
            status = 1
            try:
                os.setgroups([])
                os.setgid(self.uid)
                os.setuid(self.uid)
                self._serve(os.fdopen(to_child, "r"), os.fdopen(from_child, "w"))
                status = 0
            finally:
                os._exit(status)
        os.close(to_child)
        os.close(from_child)
        self._out = os.fdopen(self._ask, "w")
        self._in = os.fdopen(self._answers, "r")
        return self

    def ask(self, command: str) -> Any:
        self._out.write(command + "\n")
        self._out.flush()
        answer = self._in.readline()
        assert answer, "the child died"
        return json.loads(answer)

    def _serve(self, commands: Any, answers: Any) -> None:
        held: list[socket.socket] = []
        for command in commands:
            if command.strip() == "fill":
                while True:
                    sock = connect(self.path)
                    frame = noop(sock)
                    if frame.flags != REPLY:
                        answer: dict[str, Any] = {"served": len(held), "then": refusal(frame, sock)}
                        break
                    held.append(sock)
            else:
                held.pop().close()
                held.append(connect(self.path))
                answer = {"served": served(held[-1])}
            answers.write(json.dumps(answer) + "\n")
            answers.flush()

    def __exit__(self, *exc: object) -> None:
        self._out.close()
        self._in.close()
        _, status = os.waitpid(self.pid, 0)
        assert status == 0, f"the child as uid {self.uid} failed (status {status})"


# -- per agent -------------------------------------------------------------------------

def test_an_agent_connecting_by_path_is_capped_as_that_agent() -> None:
    with configured_kernel({"connections": {"per_agent": 3}}) as kernel:
        admin = kernel.client()
        agent = admin.spawn("flood", str(FLOOD_AGENT), args=[str(kernel.socket_path)], sandboxed=False)
        assert admin.wait(id=agent["id"], timeout=60)["exit_code"] == 0, admin.logs(id=agent["id"])
        # Its inherited connection counts too: two more by path reach the cap of three, and
        # the refusal leaves the inherited one working.
        assert json.loads(admin.logs(id=agent["id"])) == {"served": 2, "inherited": True, "then": {
            "code": "busy", "details": {"cap": "connections.per_agent", "limit": 3},
            "message": f"agent {agent['id']} already has 3 connections to the kernel, its cap "
                       "(connections.per_agent); close one first"}}
        assert admin.noop(b"outside clients unaffected") == b"outside clients unaffected"


# -- configuration ---------------------------------------------------------------------

def test_connection_caps_default_and_reject_bad_values() -> None:
    assert KernelConfig().connections == ConnectionLimits(per_uid=4096, per_agent=64)
    assert KernelConfig(sections={"connections": {"per_uid": 5}}).connections.per_uid == 5
    for bad, message in [({"per_uid": 0}, "connections.per_uid: expected a positive integer, got 0"),
                         ({"per_agent": True}, "connections.per_agent: expected a positive integer"),
                         ({"per_agent": "9"}, "expected a positive integer, got '9'"),
                         ({"total": 9}, "connections: unknown setting 'total'")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            _ = KernelConfig(sections={"connections": bad}).connections


def test_the_sdk_raises_busy_for_a_connection_over_its_cap() -> None:
    from agentos import AsyncClient, Busy, Client

    with configured_kernel({"connections": {"per_uid": 2}}) as kernel:
        # The kernel's own probe is gone; these two take the whole cap.
        first, second = Client(kernel.socket_path), Client(kernel.socket_path)
        try:
            assert first.noop(b"a") == b"a" and second.noop(b"b") == b"b"
            with Client(kernel.socket_path) as third, pytest.raises(Busy, match="connections.per_uid"):
                third.noop(b"c")

            async def refused() -> None:
                async with await AsyncClient.connect(kernel.socket_path) as fourth:
                    await fourth.noop(b"d")

            import asyncio
            with pytest.raises(Busy, match="connections.per_uid"):
                asyncio.run(refused())
        finally:
            first.close()
            second.close()
