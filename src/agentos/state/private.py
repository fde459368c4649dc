"""Files and directories of the kernel's state dir, readable by the kernel's uid alone.

Every file the kernel creates is 0600 and every directory 0700, from the moment it
exists: the mode is given at creation (the umask can only narrow it), never set
afterwards, so there is no window where another uid could open it. Files left by an
older kernel with a wider mode are narrowed when the kernel opens them again.
"""
from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700

#: SQLite's companions of a database file: its WAL, shared-memory index and rollback journal.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent 0700 (``mkdir -p`` would make parents 0755)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass  # another thread made it first; its mode is the one it gave
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates ``path`` 0600 (and narrows an older, wider file to 0600)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        _narrow(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` whose files are 0600."""
    return open_private(Path(path), flags)


def prepare_sqlite(path: Path) -> None:
    """Create ``path``'s directory and file private before SQLite opens it.

    SQLite creates a database's WAL and shared-memory files with the database file's
    own mode, so a 0600 database keeps its sidecars 0600 too; sidecars an older
    kernel left wider are narrowed here.
    """
    private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))
    for suffix in SQLITE_SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        try:
            fd = os.open(sidecar, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            _narrow(fd)
        finally:
            os.close(fd)


def _narrow(fd: int) -> None:
    if os.fstat(fd).st_mode & 0o777 & ~FILE_MODE:
        os.fchmod(fd, FILE_MODE)
