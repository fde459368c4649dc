"""At its fd limit the kernel answers ``busy``, through the SDK and for work that needs fds,
and does not spin; once fds free up it serves again.

Pausing and refusing at accept (both twins), the raised soft limit and the log lines are
tested in test_connection_limits.py; these start from a kernel already full the same way.
"""
from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos import Busy, Client
from agentos.testing.kernel import KernelProcess
from tests.kernel.test_connection_limits import HARD_LIMIT, REPLY, WITH_NOFILE, connect, cpu_seconds, noop, served

SLEEPER = "import time; time.sleep(600)\n"


@pytest.fixture
def full_kernel(tmp_path: Path) -> Iterator[tuple[KernelProcess, Client, list[socket.socket]]]:
    """A kernel with every fd in use: an SDK client connected first, then raw connections."""
    kernel = KernelProcess(tmp_path / "k", command=[
        sys.executable, "-c", WITH_NOFILE, str(HARD_LIMIT), str(HARD_LIMIT),
        sys.executable, "-m", "agentos", "kernel"]).start()
    client = Client(kernel.socket_path)
    held: list[socket.socket] = []
    try:
        assert client.noop(b"first") == b"first"
        while True:
            assert len(held) < HARD_LIMIT, "the kernel never ran out of fds"
            sock = connect(kernel.socket_path)
            if noop(sock).flags != REPLY:
                sock.close()
                break
            held.append(sock)
        yield kernel, client, held
    finally:
        client.close()
        for sock in held:
            sock.close()
        kernel.stop_checked()


def test_the_sdk_raises_busy_at_the_fd_limit(
        full_kernel: tuple[KernelProcess, Client, list[socket.socket]]) -> None:
    kernel, _, held = full_kernel
    with Client(kernel.socket_path) as late, pytest.raises(Busy) as refused:
        late.noop(b"late")
    assert refused.value.details == {"cap": "open_files", "limit": HARD_LIMIT, "retry_after": 0.5}
    held.pop().close()
    # The kernel sees that close on its own time: a client told busy retries after retry_after,
    # as the error says, and is served once the freed fd is seen (a wait, not a timing bound).
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(kernel.socket_path) as again:
                assert again.noop(b"again") == b"again"
            break
        except Busy as busy:
            assert time.monotonic() < deadline, "a closed connection's fd never became free"
            time.sleep(busy.details["retry_after"])


def test_a_spawn_with_no_fd_left_is_busy_not_internal_and_the_kernel_stays_idle(
        full_kernel: tuple[KernelProcess, Client, list[socket.socket]], tmp_path: Path) -> None:
    kernel, client, held = full_kernel
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    # One fd free: enough for the agent's cgroup files (opened one at a time), not for the
    # socketpair of its connection, the first step needing two.
    held.pop().close()
    assert client.noop(b"the close is seen") == b"the close is seen"
    with pytest.raises(Busy) as refused:
        client.spawn("starved", str(script), sandboxed=False)
    assert refused.value.details["cap"] == "open_files"
    assert "open files in use" in str(refused.value)
    assert "syscall SPAWN: out of open files" in kernel.log()
    assert "Traceback" not in kernel.log()

    # Full and idle, with held clients connected: no work to do, so no CPU to speak of.
    before = cpu_seconds(kernel.pid)
    time.sleep(2)
    used = cpu_seconds(kernel.pid) - before
    assert used < 0.2, f"the kernel used {used:.2f}s of CPU in 2s of being full"

    # Enough fds freed for an agent (its connection, pipes and pidfd): the same SPAWN works.
    for sock in held[-12:]:
        sock.close()
    del held[-12:]
    agent = client.spawn("starved", str(script), sandboxed=False)
    client.kill(id=agent["id"])
    assert all(served(sock) for sock in held)
