"""Helpers for cgroup tests: held children, a fake v2 cgroupfs, and this host's hierarchies."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.cgroups import CgroupDriver, V1Driver, V2Driver, base, detect, instance_name
from agentos.cgroups import v2 as v2_module

#: Files a v2 kernel shows in a new cgroup for each controller its parent enables.
_CONTROL_FILES = {
    "memory": {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.oom.group": "0\n"},
    "pids": {"pids.max": "max\n"},
    "cpu": {"cpu.max": "max 100000\n"},
}


#: Writes outside the fake tree (and of files the kernel gives no rules) go to disk as they are.
_REAL_WRITE = base.write


class FakeCgroupfs:
    """A directory tree that acts as a cgroup v2 hierarchy where the driver can tell.

    ``mkdir`` fills a new cgroup with the control files a kernel would show, given
    the controllers its parent enables in ``cgroup.subtree_control``; ``rmdir``
    refuses (returns False, as for EBUSY) while the cgroup has child cgroups or
    processes, and otherwise takes its files with it. ``write`` keeps the kernel's
    rules for the two files that have them: a pid written to ``cgroup.procs`` leaves
    every other cgroup; ``cgroup.subtree_control`` takes ``+name``/``-name``, refuses a
    controller the cgroup is not offered (ENOENT), enabling one in a cgroup that holds
    processes ("no internal processes", EBUSY, the root excepted) and disabling one a
    child still enables (EBUSY), and offers the change to the children. The test plays
    the kernel for the counters (memory.current, cpu.stat ...): it writes them itself.
    Its ``mkdir``, ``rmdir`` and ``write`` take a path as the drivers give it: a string or a Path.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "cgroup.controllers").write_text("cpu io memory pids\n")
        (root / "cgroup.subtree_control").write_text("")
        (root / "cgroup.procs").write_text("")

    @staticmethod
    def enabled(directory: Path) -> set[str]:
        """The controllers ``directory`` delegates to its children."""
        return {word.lstrip("+") for word in (directory / "cgroup.subtree_control").read_text().split()}

    @staticmethod
    def procs(directory: Path) -> list[int]:
        """The pids in ``directory``'s own ``cgroup.procs``."""
        return [int(word) for word in (directory / "cgroup.procs").read_text().split()]

    def mkdir(self, path: str | Path, exist_ok: bool = False) -> None:
        path = Path(path)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not exist_ok:
                raise
            return
        for name, text in {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.kill": "",
                           # Core files: the freezer needs no controller (the test plays the kernel
                           # for "frozen").
                           "cgroup.freeze": "0\n", "cgroup.events": "populated 0\nfrozen 0\n"}.items():
            (path / name).write_text(text)
        self._offer(path, self.enabled(path.parent))

    @staticmethod
    def _offer(path: Path, controllers: set[str]) -> None:
        """Give ``path`` what its parent enables: its ``cgroup.controllers`` and their files."""
        (path / "cgroup.controllers").write_text(" ".join(sorted(controllers)) + "\n")
        for controller in controllers:
            for name, text in _CONTROL_FILES.get(controller, {}).items():
                if not (path / name).exists():
                    (path / name).write_text(text)

    def write(self, path: str | Path, value: str) -> None:
        path = Path(path)
        cgroup = path.parent
        if not path.is_relative_to(self.root) or path.name not in ("cgroup.procs", "cgroup.subtree_control"):
            _REAL_WRITE(path, value)
        elif path.name == "cgroup.procs":
            if cgroup != self.root and self.enabled(cgroup):
                raise OSError(errno.EBUSY, "a cgroup that enables controllers holds no process", str(path))
            pid = value.strip()
            for procs in self.root.rglob("cgroup.procs"):
                words = procs.read_text().split()
                if pid in words:
                    procs.write_text("".join(f"{word}\n" for word in words if word != pid))
            with open(path, "a") as f:
                f.write(f"{pid}\n")
        else:
            self._control(cgroup, value.split())

    def _control(self, cgroup: Path, words: list[str]) -> None:
        enabled = self.enabled(cgroup)
        offered = set((cgroup / "cgroup.controllers").read_text().split())
        children = [entry for entry in cgroup.iterdir() if entry.is_dir()]
        for word in words:
            name = word[1:]
            if word.startswith("+"):
                if name not in offered:
                    raise OSError(errno.ENOENT, f"{name} is not offered to this cgroup", str(cgroup))
                if cgroup != self.root and self.procs(cgroup):
                    raise OSError(errno.EBUSY, "no internal processes", str(cgroup))
                enabled.add(name)
            else:
                if any(name in self.enabled(child) for child in children):
                    raise OSError(errno.EBUSY, f"a child still enables {name}", str(cgroup))
                enabled.discard(name)
        (cgroup / "cgroup.subtree_control").write_text(" ".join(sorted(enabled)) + ("\n" if enabled else ""))
        for child in children:
            self._offer(child, enabled)

    @staticmethod
    def delegate(directory: Path) -> None:
        """What systemd's ``Delegate=yes`` does: any other uid may now write the directory and the
        files a delegatee writes. systemd chowns them to the user (test_delegated_host.py does, on
        the real hierarchy); the mode's other-write bits need no root and count the same."""
        for path in [directory, *(directory / name for name in ("cgroup.procs", "cgroup.subtree_control",
                                                                 "cgroup.threads"))]:
            if path.exists():
                path.chmod(path.stat().st_mode | (0o003 if path.is_dir() else 0o002))

    def rmdir(self, path: str | Path) -> bool:
        path = Path(path)
        if not path.exists():
            return True
        if any(entry.is_dir() for entry in path.iterdir()) or (path / "cgroup.procs").read_text().strip():
            return False
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()
        return True

    def cgroups(self) -> list[str]:
        """Every cgroup directory below the root, relative to it, sorted."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_dir())


@pytest.fixture
def cgroupfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupfs:
    """A fake v2 hierarchy; the drivers' directory calls go to it."""
    fake = FakeCgroupfs(tmp_path / "cgroup")
    monkeypatch.setattr(base, "mkdir", fake.mkdir)
    monkeypatch.setattr(base, "rmdir", fake.rmdir)
    for module in (base, v2_module):
        monkeypatch.setattr(module, "write", fake.write)
    return fake


def fail_at(monkeypatch: pytest.MonkeyPatch, module: object, name: str, at: int | None) -> list[int]:
    """Make the ``at``-th call of ``module.name`` raise (None: never); returns the live call count."""
    real = getattr(module, name)
    calls = [0]

    def wrapped(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == at:
            # What a fuzzed `cpu: 1e400` once raised: not an OSError, and 25 directories leaked.
            raise OverflowError("cannot convert float infinity to integer")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def every_failure_of_create_leaves_nothing(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                                           create: Callable[[str], Any], tree: Callable[[], object],
                                           least_calls: int) -> None:
    """Fail the 1st, 2nd, ... call of ``module.name`` that ``create(agent_id)`` makes, each in turn:
    every time ``tree()`` must be as it was before (nothing made is left behind)."""
    before = tree()
    with monkeypatch.context() as patch:
        calls = fail_at(patch, module, name, None)
        assert create("probe").remove()
    assert calls[0] >= least_calls
    for at in range(1, calls[0] + 1):
        with monkeypatch.context() as patch:
            fail_at(patch, module, name, at)
            with pytest.raises(OverflowError):
                create("child")
        assert tree() == before, f"call {at} of {name}"


def dead_instance() -> str:
    """The instance name of a process that has exited: what a crashed kernel leaves."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    name = instance_name(proc.pid)
    proc.kill()
    proc.wait()
    return name


class Held:
    """A Python child blocked on stdin until ``release()``: attach it to a cgroup first."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.readline()\n{code}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.pid = self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def line(self) -> str:
        """The next line the child prints ('' once it is gone)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def held() -> Iterator[type[Held]]:
    """``held(code)`` starts a held child; any still alive at the end are killed."""
    made: list[Held] = []

    def make(code: str = "import time; time.sleep(60)") -> Held:
        child = Held(code)
        made.append(child)
        return child

    yield make  # type: ignore[misc]
    for child in made:
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()
        for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups")


@pytest.fixture
def v1_mounts() -> dict[str, Path]:
    """This host's v1 hierarchies (skips unless root on a v1 or hybrid host)."""
    _require_root()
    mounts = detect().v1_mounts
    if not {"memory", "pids", "cpu"} <= set(mounts):
        pytest.skip("needs a cgroup v1 host with memory, pids and cpu hierarchies (hybrid or v1)")
    return mounts


@pytest.fixture
def v2_mount() -> tuple[Path, frozenset[str]]:
    """This host's v2 mount and its controllers (skips unless root with cgroup2 mounted)."""
    _require_root()
    layout = detect()
    if layout.v2_mount is None:
        pytest.skip("needs a mounted cgroup v2 hierarchy")
    return layout.v2_mount, layout.v2_controllers


@pytest.fixture
def v1(v1_mounts: dict[str, Path]) -> Iterator[V1Driver]:
    """A started v1 driver on this host; it must leave nothing behind."""
    driver = V1Driver(v1_mounts)
    driver.start()
    yield driver
    assert_nothing_left(driver)


@pytest.fixture
def v2(v2_mount: tuple[Path, frozenset[str]]) -> Iterator[V2Driver]:
    """A started v2 driver on this host; it must leave nothing behind."""
    mount, controllers = v2_mount
    driver = V2Driver(mount, controllers)
    driver.start()
    yield driver
    assert_nothing_left(driver)


def assert_nothing_left(driver: CgroupDriver) -> None:
    """Stop ``driver``; fail if any cgroup of its survived, after removing it (a failed test leaks nothing)."""
    left = sorted(str(path) for directory in driver.instance_dirs() for path in directory.rglob("*")
                  if path.is_dir())
    for directory in driver.instance_dirs():
        for path, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
            if path != str(directory):
                os.rmdir(path)
    driver.stop()
    assert left == [], "cgroups left behind"
    assert [d for d in driver.instance_dirs() if d.exists()] == []
