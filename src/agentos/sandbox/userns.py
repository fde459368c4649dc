"""User namespaces: how an unprivileged kernel still isolates its agents (rootless).

The child is born in a new user namespace together with all its other
namespaces, so it holds every capability over them without any on the host. It
maps its own uid and gid to themselves (the one mapping an unprivileged process
may write), so files it owns look the same inside; every other host id shows up
as the overflow id (nobody). setgroups is denied first, as the kernel requires.
"""
from __future__ import annotations

import os

__all__ = ["map_self", "wants_user_namespace"]


def wants_user_namespace(requested: bool | None) -> bool:
    """Whether to create a user namespace: as asked, else only when not root."""
    return os.geteuid() != 0 if requested is None else requested


def map_self(uid: int, gid: int) -> None:
    """Map ``uid``/``gid`` (this process's ids outside) to themselves (runs in the child)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
