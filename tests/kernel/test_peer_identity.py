"""Who a client connecting by path is, at accept (``Kernel._on_accept``, ``kernel/peers.py``).

Finding out reads /proc on the kernel's loop (the peer's cgroup, then each ancestor), so a
process found outside every agent is remembered, by its pidfd's inode, and its next
connections skip the look; an agent's process is looked up at every connection. The
processes service's answer is stubbed here; tests/processes/test_confinement.py and
tests/kernel/test_connection_limits.py hold the real one (an agent by path, its grandchild,
an agent capped across its connections).
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.kernel.config import KernelConfig
from agentos.kernel.daemon import Kernel
from agentos.kernel.peers import Outsiders, PeerGone

_PEERCRED = struct.Struct("3i")
#: Connects ``argv[2]`` times to the socket ``argv[1]``, then holds them until stdin closes.
CONNECTOR = ("import socket, sys\n"
             "held = [socket.socket(socket.AF_UNIX) for _ in range(int(sys.argv[2]))]\n"
             "for s in held: s.connect(sys.argv[1])\n"
             "print('connected', flush=True)\n"
             "sys.stdin.read()\n")


class Accepted:
    """What the reactor hands ``on_accept``: the kernel's end of a client's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer_pid, self.peer_uid, self.peer_gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        self.context: Any = None  # the kernel's Identity, once identified
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def close_with_error(self, payload: bytes) -> None:
        self.closed = True


class Accepting:
    """A kernel (not running: only its accept path is called), a listener, and a stand-in for
    the processes service's look that records each pid it was asked about."""

    def __init__(self, tmp_path: Path) -> None:
        self.kernel = Kernel(KernelConfig(socket_path=tmp_path / "k.sock", state_dir=tmp_path / "state"))
        self.kernel.peer_agent = self.look
        #: pid -> the agent it is in, or the exception the look raises for it.
        self.answers: dict[int, str | Exception] = {}
        self.looked_up: list[int] = []
        self.path = str(tmp_path / "listen.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.held: list[socket.socket] = []
        self.children: list[subprocess.Popen[str]] = []

    def look(self, pid: int, pidfd: int | None) -> str | None:
        self.looked_up.append(pid)
        answer = self.answers.get(pid)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def from_here(self) -> Accepted:
        """A connection this process made, accepted and identified."""
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.held.append(client)
        client.connect(self.path)
        return self.accept()

    def child(self, connections: int) -> int:
        """A new process that made ``connections`` connections, waiting to be accepted; its pid."""
        child = subprocess.Popen([sys.executable, "-c", CONNECTOR, self.path, str(connections)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.children.append(child)
        assert child.stdout is not None and child.stdout.readline() == "connected\n"
        return child.pid

    def accept(self) -> Accepted:
        sock, _ = self.listener.accept()
        self.held.append(sock)
        conn = Accepted(sock)
        self.kernel._on_accept(conn)
        return conn

    def close(self) -> None:
        for child in self.children:
            child.communicate("")
        for sock in self.held:
            sock.close()
        self.listener.close()
        self.kernel.reactor.close()


@pytest.fixture
def accepting(tmp_path: Path) -> Iterator[Accepting]:
    before = sorted(os.listdir("/proc/self/fd"))
    accepting = Accepting(tmp_path)
    try:
        yield accepting
    finally:
        accepting.close()
    assert sorted(os.listdir("/proc/self/fd")) == before, "a pidfd or socket leaked"


def pidfd_inodes_are_unique() -> bool:
    """Whether two live processes' pidfds have different inodes (pidfs), found apart from the kernel's code."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    fds = [os.pidfd_open(os.getpid()), os.pidfd_open(child.pid)]
    try:
        return os.fstat(fds[0]).st_ino != os.fstat(fds[1]).st_ino
    finally:
        for fd in fds:
            os.close(fd)
        child.communicate(b"")


def test_outsiders_remember_processes_only_where_a_pidfd_names_one_for_good() -> None:
    outsiders = Outsiders()
    assert outsiders.enabled == pidfd_inodes_are_unique()
    first, again = os.pidfd_open(os.getpid()), os.pidfd_open(os.getpid())
    try:
        key = outsiders.key(first)
        assert key == outsiders.key(again) and (key is None) != outsiders.enabled
        assert key not in outsiders
        outsiders.add(key)
        assert (key in outsiders) == outsiders.enabled
    finally:
        os.close(first)
        os.close(again)
    assert outsiders.key(None) is None and None not in outsiders


def test_outsiders_are_bounded_the_oldest_forgotten_first() -> None:
    outsiders = Outsiders(size=3)
    for key in range(5):
        outsiders.add(key)
    assert [key in outsiders for key in range(5)] == [False, False, True, True, True]


def test_an_outside_process_is_looked_up_once_for_all_its_connections(accepting: Accepting) -> None:
    conns = [accepting.from_here() for _ in range(3)]
    lookups = 1 if accepting.kernel._outsiders.enabled else 3
    assert accepting.looked_up == [os.getpid()] * lookups
    for conn in conns:
        assert not conn.closed and conn.context.agent_id is None and conn.context.pid == os.getpid()
    # Another process is another look, whoever it descends from.
    child = accepting.child(2)
    for _ in range(2):
        assert accepting.accept().context.agent_id is None
    assert accepting.looked_up == [os.getpid()] * lookups + [child] * lookups


def test_without_pidfs_every_connection_is_looked_up(accepting: Accepting) -> None:
    accepting.kernel._outsiders.enabled = False
    for _ in range(3):
        assert accepting.from_here().context.agent_id is None
    assert accepting.looked_up == [os.getpid()] * 3


def test_an_agents_process_is_that_agent_at_every_connection_and_never_remembered(
        accepting: Accepting) -> None:
    child = accepting.child(3)
    accepting.answers[child] = "agent-1"
    for _ in range(2):
        conn = accepting.accept()
        assert (conn.closed, conn.context.agent_id, conn.context.admin) == (False, "agent-1", False)
    # Its agent ended: the next connection is looked up again, and is no agent's.
    del accepting.answers[child]
    assert accepting.accept().context.agent_id is None
    assert accepting.looked_up == [child] * 3


@pytest.mark.parametrize("failure", [PeerGone("ended while connecting"), OSError("unreadable /proc")],
                         ids=["peer gone", "look failed"])
def test_a_process_the_look_fails_for_is_refused_and_not_remembered(accepting: Accepting,
                                                                     failure: Exception) -> None:
    accepting.answers[os.getpid()] = failure
    refused = accepting.from_here()
    assert refused.closed and refused.context is None
    del accepting.answers[os.getpid()]
    assert not accepting.from_here().closed
    assert accepting.looked_up == [os.getpid()] * 2
