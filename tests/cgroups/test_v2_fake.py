"""The v2 driver against a directory laid out like cgroupfs: the files a v2 kernel would show.

Here the test plays the kernel: it writes the counters (memory.events, cpu.stat ...)
a real kernel would, and reads back what the driver wrote.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agentos.cgroups import Limits, V2Driver

ALL = frozenset({"cpu", "memory", "pids", "io"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def started(root: Path, controllers: frozenset[str] = ALL) -> V2Driver:
    driver = V2Driver(root, controllers, instance="1-1")
    assert driver.start() == []
    return driver


def test_start_delegates_controllers_down_to_the_instance(root: Path) -> None:
    driver = started(root)
    for directory in (root, root / "agentos", root / "agentos" / "1-1"):
        enabled = (directory / "cgroup.subtree_control").read_text().split()
        assert {"+cpu", "+memory", "+pids"} <= set(enabled), directory
    assert driver.enforceable == {"memory", "pids", "cpu"}


def test_already_enabled_controllers_are_left_alone(root: Path) -> None:
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    started(root)
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_limits_are_written_in_v2_format(root: Path) -> None:
    driver = started(root)
    cgroup = driver.create("a1", Limits(memory=64 * 1024 * 1024, pids=32, cpu=0.5))
    path = root / "agentos" / "1-1" / "a1"
    assert cgroup.dirs == [path]
    assert (path / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (path / "pids.max").read_text() == "32"
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert cgroup.enforced == {"memory": True, "pids": True, "cpu": True}


def test_swap_capped_and_oom_group_set_when_the_kernel_offers_them(root: Path) -> None:
    driver = started(root)
    path = root / "agentos" / "1-1" / "a1"
    path.mkdir(parents=True)
    (path / "memory.swap.max").write_text("max\n")
    (path / "memory.oom.group").write_text("0\n")
    driver.create("a1", Limits(memory=1 << 20))
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "memory.oom.group").read_text() == "1"


def test_missing_controller_is_reported_not_enforced(root: Path) -> None:
    driver = started(root, frozenset({"cpu"}))
    assert driver.enforceable == {"cpu"}
    cgroup = driver.create("a1", Limits(memory=1 << 20, pids=4, cpu=1.0))
    assert cgroup.enforced == {"memory": False, "pids": False, "cpu": True}
    path = root / "agentos" / "1-1" / "a1"
    assert not (path / "memory.max").exists()
    assert not (path / "pids.max").exists()


def test_stats_parse_v2_counters(root: Path) -> None:
    driver = started(root)
    cgroup = driver.create("a1", Limits())
    path = cgroup.dirs[0]
    (path / "memory.current").write_text("1048576\n")
    (path / "memory.peak").write_text("4194304\n")
    (path / "pids.current").write_text("3\n")
    (path / "cpu.stat").write_text("usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n"
                                   "nr_periods 40\nnr_throttled 12\nthrottled_usec 90000\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    stats = cgroup.stats()
    assert stats.memory_current == 1048576
    assert stats.memory_peak == 4194304
    assert stats.pids_current == 3
    assert stats.cpu_usage_usec == 250000
    assert (stats.cpu_nr_periods, stats.cpu_nr_throttled, stats.cpu_throttled_usec) == (40, 12, 90000)
    assert stats.oom_kills == 1


def test_oom_kill_is_read_from_memory_events(root: Path) -> None:
    driver = started(root)
    cgroup = driver.create("a1", Limits(memory=1 << 20))
    events = cgroup.dirs[0] / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
    assert not cgroup.oom_killed()
    events.write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert cgroup.oom_killed()


def test_counters_missing_are_none(root: Path) -> None:
    cgroup = started(root).create("a1", Limits())
    stats = cgroup.stats()
    assert stats.memory_peak is None and stats.oom_kills is None
    assert not cgroup.oom_killed()


def test_kill_uses_cgroup_kill(root: Path) -> None:
    cgroup = started(root).create("a1", Limits())
    (cgroup.dirs[0] / "cgroup.kill").write_text("")
    (cgroup.dirs[0] / "cgroup.procs").write_text("4242\n4243\n")
    assert cgroup.kill() == 2
    assert (cgroup.dirs[0] / "cgroup.kill").read_text() == "1"


def test_kill_without_cgroup_kill_signals_each_process(root: Path, held) -> None:  # type: ignore[no-untyped-def]
    cgroup = started(root).create("a1", Limits())
    child = held()
    (cgroup.dirs[0] / "cgroup.procs").write_text(f"{child.pid}\n")
    assert cgroup.kill() == 1
    assert child.wait() == -signal.SIGKILL


def test_attach_writes_the_pid(root: Path) -> None:
    cgroup = started(root).create("a1", Limits())
    cgroup.attach(1234)
    assert (cgroup.dirs[0] / "cgroup.procs").read_text() == "1234"


def test_bad_agent_id_is_refused(root: Path) -> None:
    with pytest.raises(ValueError):
        started(root).create("../escape", Limits())
