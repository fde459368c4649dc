"""Landlock: the agent can write only inside its writable paths, whatever else it can see.

Landlock is the second fence behind the read-only binds of the mount namespace
(and the only one for an agent without a mount namespace): it handles every
write-type file access, and allows them beneath the agent's writable paths only.
Reads and execution are left to the mount view. The rights handled grow with the
kernel's Landlock ABI; on ABI 6+ the agent is also scoped, so it can neither
signal processes outside its sandbox nor connect to their abstract Unix sockets.
"""
from __future__ import annotations

import os

from agentos.sandbox._linux import linux

__all__ = ["abi", "restrict", "rules", "write_rights"]

# LANDLOCK_ACCESS_FS_* (linux/landlock.h), by the ABI that introduced them.
_WRITE_FILE = 1 << 1
_REMOVE_DIR = 1 << 4
_REMOVE_FILE = 1 << 5
_MAKE_CHAR = 1 << 6
_MAKE_DIR = 1 << 7
_MAKE_REG = 1 << 8
_MAKE_SOCK = 1 << 9
_MAKE_FIFO = 1 << 10
_MAKE_BLOCK = 1 << 11
_MAKE_SYM = 1 << 12
_REFER = 1 << 13  # ABI 2: without it, ABI 1 refuses every rename across directories
_TRUNCATE = 1 << 14  # ABI 3
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

_ABI1_WRITES = (_WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_CHAR | _MAKE_DIR | _MAKE_REG | _MAKE_SOCK
                | _MAKE_FIFO | _MAKE_BLOCK | _MAKE_SYM)
#: Rights that apply to a file (not a directory): a device such as /dev/null.
_FILE_WRITES = _WRITE_FILE | _TRUNCATE
#: Device files an agent may always write to, when its view has them.
_WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty")


def abi() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is unavailable."""
    try:
        return linux.landlock_abi()
    except OSError:
        return 0


def write_rights(version: int) -> int:
    """Every write-type file-system right Landlock ABI ``version`` can handle."""
    rights = _ABI1_WRITES
    if version >= 2:
        rights |= _REFER
    if version >= 3:
        rights |= _TRUNCATE
    return rights


def rules(version: int, writable: list[str]) -> tuple[int, int, int, list[tuple[str, bool]]]:
    """The ruleset of an agent: (rights handled, scopes, the rights a file is given, and each
    path with whether it must exist). A directory is given every handled right beneath it, a
    file (a writable file, a device) only the rights files have. The one home of the rules: the
    agent's setup (``restrict``) and a sandbox's init (``initd``, one layer per exec) apply it."""
    handled = write_rights(version)
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if version >= 6 else 0
    paths = [(path, True) for path in writable] + [(path, False) for path in _WRITABLE_DEVICES]
    return handled, scoped, handled & _FILE_WRITES, paths


def restrict(version: int, writable: list[str]) -> None:
    """Allow writes only beneath ``writable`` and to the usual devices (runs in the child).

    Must follow no_new_privs; paths are resolved in the sandbox's own view.
    """
    handled, scoped, file_rights, paths = rules(version, writable)
    ruleset = linux.landlock_create_ruleset(handled, 0, scoped)
    try:
        for path, required in paths:
            if required or os.path.exists(path):
                _allow(ruleset, path, handled if os.path.isdir(path) else file_rights)
        linux.landlock_restrict_self(ruleset)
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        linux.landlock_add_path_rule(ruleset, fd, rights)
    finally:
        os.close(fd)
