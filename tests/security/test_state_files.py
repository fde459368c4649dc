"""The kernel's files are private by their own mode, not only by the 0700 state dir around
them: with the dir opened up by mistake, another local user still reads nothing."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .conftest import HostileKernel, Users, as_user


def _use_every_subsystem(kernel: HostileKernel) -> None:
    admin = kernel.admin
    admin.store("secret", "stored value")
    admin.store("secret", "shared value", scope="shared")
    admin.register("inbox")
    admin.send("inbox", "private mail")
    admin.context("create", "chat", system="private prompt")
    kernel.attack("victim", "a line for the log", "0")
    assert admin.audit(limit=1)


def _read_errno(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def test_every_state_file_is_0600_and_unreadable_even_through_an_open_dir(
        hostile: HostileKernel, users: Users) -> None:
    _use_every_subsystem(hostile)
    state_dir = hostile.process.state_dir
    owner = os.stat(state_dir).st_uid
    entries = [Path(d, name) for d, dirs, files in os.walk(state_dir) for name in dirs + files]
    files = [p for p in entries if p.is_file()]
    names = {p.name for p in files}
    assert {"state.db", "state.db-wal", "mailboxes.db", "mailboxes.db-wal", "audit.log"} <= names, names
    for path in [state_dir, *entries]:
        info = os.lstat(path)
        expected = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (expected, owner), path

    # A mistake opens every directory for traversal; the files' own modes still hold.
    dirs = [state_dir, *(p for p in entries if p.is_dir())]
    for directory in dirs:
        directory.chmod(0o711)
    try:
        outcome = as_user(users.attacker, lambda: {str(f): _read_errno(str(f)) for f in files})
    finally:
        for directory in dirs:
            directory.chmod(0o700)
    assert set(outcome.values()) == {"EACCES"}, outcome
