"""Who is at the other end of a connection."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(slots=True)
class Identity:
    """The caller of a syscall: a local process by SO_PEERCRED, or an agent the kernel spawned."""

    pid: int
    uid: int
    gid: int
    #: Id of the agent when the connection is one the kernel handed to an agent it spawned.
    agent_id: str | None = None
    admin: bool = False

    @classmethod
    def from_peer(cls, pid: int, uid: int, gid: int) -> Identity:
        # root and the kernel's own uid administer the kernel; issue 6 adds configured uids.
        return cls(pid=pid, uid=uid, gid=gid, admin=uid in (0, os.geteuid()))
