"""Which agent a process belongs to: how a connection made by path gets its agent's identity.

An agent that reaches the kernel's socket by path (an unsandboxed agent, or one whose
view somehow shows it) must come in as itself, never as the uid's admin. A process
belongs to an agent if its cgroup lies in that agent's subtree (every process the
agent forks stays there) or, without cgroups, if the agent's process is among its
ancestors. The peer is pinned by a pidfd taken at connect time (SO_PEERPIDFD), so a
pid that is reused while we look cannot lend its identity to the connection.

That look reads /proc (the peer's cgroup, then each ancestor's stat), on the loop. A
client that opens many connections pays it once: ``Outsiders`` remembers the processes
found outside every agent by a name no other process ever gets (their pidfd's inode).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Container, Mapping

from ..cgroups.base import TOP

#: SO_PEERPIDFD (Linux >= 6.5); not named by Python 3.11's socket module.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
#: Ancestors looked at before giving up (a deeper tree is not an agent's).
_MAX_DEPTH = 256


class PeerGone(Exception):
    """The connecting process ended (or its pid was reused) before it could be identified."""


def peer_pidfd(fd: int) -> int | None:
    """A pidfd of the process that connected socket ``fd``, or None where the kernel cannot give one."""
    sock = socket.socket(fileno=fd)
    try:
        pidfd: int = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        return pidfd
    except OSError:
        return None
    finally:
        sock.detach()


def agent_of_pid(pid: int, agent_ids: Container[str], agent_pids: Mapping[int, str],
                 pidfd: int | None = None) -> str | None:
    """The id of the agent ``pid`` belongs to; None for a process outside every agent.

    ``agent_ids``: live agent ids (cgroup directory names); ``agent_pids``: the live agents'
    main pids. With ``pidfd`` (the peer pinned at connect time), raises ``PeerGone`` if the
    process is no longer the one that connected.
    """
    found = _by_cgroup(pid, agent_ids)
    if found is None:
        found = _by_ancestry(pid, agent_pids)
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, 0)
        except ProcessLookupError:
            raise PeerGone(f"process {pid} ended while connecting") from None
        except PermissionError:
            pass  # another uid's process (an unprivileged kernel may not signal it): alive
    return found


def _by_cgroup(pid: int, agent_ids: Container[str]) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)[-1].split("/")
        if TOP not in parts:
            continue
        # The deepest agent: a child agent's cgroup is nested in its parent's.
        for segment in reversed(parts[parts.index(TOP) + 1:]):
            if segment in agent_ids:
                return segment
    return None


def _by_ancestry(pid: int, agent_pids: Mapping[int, str]) -> str | None:
    for _ in range(_MAX_DEPTH):
        if pid in agent_pids:
            return agent_pids[pid]
        if pid <= 1 or pid == os.getpid():
            return None
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        pid = int(stat[stat.rindex(b")") + 2:].split()[1])
    return None


class Outsiders:
    """The processes found outside every agent, so their next connections skip the look.

    Outside is for good: a process cannot gain an agent as an ancestor (an orphan is
    reparented upwards), and the kernel puts in an agent's cgroup only processes it starts
    for it. What a process moved into one later anyway could do then, it could do on a
    connection it opened before. Agents' processes are not remembered: their answer
    changes as agents end.

    Each is named by its pidfd's inode, where that names one process for good (pidfs,
    Linux 6.9+, 64-bit): a pid could be another process's by the next connection. Without
    pidfs every pidfd shares one inode, and nothing is remembered. At most ``size`` are
    kept, the oldest dropped first.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: dict[int, None] = {}
        self.enabled = _pidfd_inodes_are_unique()

    def key(self, pidfd: int | None) -> int | None:
        """The name of the process behind ``pidfd``, or None where it has none for good."""
        if pidfd is None or not self.enabled:
            return None
        return os.fstat(pidfd).st_ino

    def __contains__(self, key: int | None) -> bool:
        return key is not None and key in self._known

    def add(self, key: int | None) -> None:
        if key is None:
            return
        self._known[key] = None
        if len(self._known) > self.size:
            del self._known[next(iter(self._known))]


def _pidfd_inodes_are_unique() -> bool:
    # pidfs has its own device; before it, pidfds were anonymous inodes, as an eventfd is.
    if sys.maxsize <= 2**32:
        return False  # a 32-bit pidfs inode number wraps
    fds: list[int] = []
    try:
        fds.append(os.pidfd_open(os.getpid()))
        fds.append(os.eventfd(0))
        return os.fstat(fds[0]).st_dev != os.fstat(fds[1]).st_dev
    except OSError:
        return False
    finally:
        for fd in fds:
            os.close(fd)
