"""Which agent a process belongs to: how a connection made by path gets its agent's identity.

An agent that reaches the kernel's socket by path (an unsandboxed agent, or one whose
view somehow shows it) must come in as itself, never as the uid's admin. A process
belongs to an agent if its cgroup lies in that agent's subtree (every process the
agent forks stays there) or, without cgroups, if the agent's process is among its
ancestors. The peer is pinned by a pidfd taken at connect time (SO_PEERPIDFD), so a
pid that is reused while we look cannot lend its identity to the connection.
"""
from __future__ import annotations

import os
import signal
import socket
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
