"""Everything a kernel writes under its state dir is its uid's alone: files 0600, dirs 0700.

The kernel runs with umask 0, so a mode that is not given at creation would show.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentos.testing.kernel import KernelProcess


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def open_kernel(tmp_path: Path) -> Iterator[KernelProcess]:
    """A kernel started with umask 0: every file it makes gets the mode it asks for."""
    with umask(0):
        k = KernelProcess(tmp_path / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()


def modes(root: Path) -> dict[str, int]:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = os.lstat(path).st_mode
    return found


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    wide = {path: oct(mode) for path, mode in found.items()
            if stat.S_IMODE(mode) != (0o700 if stat.S_ISDIR(mode) else 0o600)}
    assert not wide, f"not private: {wide}"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    return found


def busy(k: KernelProcess) -> None:
    """Write through every subsystem that keeps files: state, mail, contexts, agent output, audit."""
    c = k.client()
    c.store("k", {"v": 1})
    c.store("s", "shared", scope="shared")
    c.register("inbox")
    c.send("inbox", "hello")
    assert c.recv(timeout=5, name="inbox")["body"] == "hello"
    c.context("create", "chat", system="be brief")
    c.spawn("talker", command=[sys.executable, "-c", "print('out' * 1000)"], sandboxed=False)
    assert c.wait("talker", timeout=60)["exit_code"] == 0
    assert c.audit(limit=1)


def test_every_file_the_kernel_creates_is_private(open_kernel: KernelProcess) -> None:
    busy(open_kernel)
    found = assert_private(open_kernel.state_dir)
    # While the kernel runs SQLite keeps its WAL and shared-memory files: they count too.
    for db in ("state.db", "mailboxes.db"):
        assert {db, f"{db}-wal", f"{db}-shm"} <= set(found), sorted(found)
    assert "audit.log" in found
    assert any(p.startswith("logs/talker-") for p in found), sorted(found)
    assert any(p.startswith("llm/contexts/") and stat.S_ISREG(m) for p, m in found.items()), sorted(found)
    open_kernel.restart()
    busy_again = open_kernel.client()
    busy_again.store("after", "restart")
    assert_private(open_kernel.state_dir)


def test_files_an_older_kernel_left_open_are_narrowed(open_kernel: KernelProcess) -> None:
    busy(open_kernel)
    open_kernel.stop()
    for path in open_kernel.state_dir.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o644)
    with umask(0):
        open_kernel.start()
    open_kernel.client().store("k", 2)
    open_kernel.client().register("inbox2")
    found = modes(open_kernel.state_dir)
    for name in ("state.db", "state.db-wal", "state.db-shm", "mailboxes.db", "audit.log"):
        assert stat.S_IMODE(found[name]) == 0o600, (name, oct(found[name]))
