"""Helpers for cgroup tests: children that wait to be placed in a cgroup before they run."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.cgroups import detect


class Held:
    """A Python child blocked on stdin until ``release()``: attach it to a cgroup first."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.readline()\n{code}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.pid = self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

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
        if child.proc.stdin and not child.proc.stdin.closed:
            child.proc.stdin.close()
        if child.proc.stderr:
            child.proc.stderr.close()


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
