"""The v2 driver against a fake cgroupfs (see ``FakeCgroupfs``): layout, files written, removal order.

Here the test plays the kernel: it writes the counters (memory.events, cpu.stat ...)
a real kernel would, and reads back what the driver wrote.
"""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agentos.cgroups import LEAF, AgentCgroup, CgroupError, Limits, NoDriver, V1Driver, V2Driver, base, destroy, v2

from .conftest import FakeCgroupfs, dead_instance, every_failure_of_create_leaves_nothing

ALL = frozenset({"cpu", "memory", "pids", "io"})
MiB = 1024 * 1024


def started(root: Path, controllers: frozenset[str] = ALL, instance: str = "1-1") -> V2Driver:
    driver = V2Driver(root, controllers, instance=instance)
    assert driver.start() == []
    return driver


def test_start_delegates_controllers_down_to_the_instance(cgroupfs: FakeCgroupfs) -> None:
    root = cgroupfs.root
    driver = started(root)
    for directory in (root, root / "agentos", root / "agentos" / "1-1"):
        assert {"cpu", "memory", "pids"} <= cgroupfs.enabled(directory), directory
    assert driver.enforceable == {"memory", "pids", "cpu"}


def test_already_enabled_controllers_are_left_alone(cgroupfs: FakeCgroupfs) -> None:
    (cgroupfs.root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    started(cgroupfs.root)
    assert (cgroupfs.root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_an_agent_is_a_directory_of_limits_around_a_leaf_of_processes(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    cgroup = driver.create("a1", Limits(memory=64 * MiB, pids=32, cpu=0.5))
    path = cgroupfs.root / "agentos" / "1-1" / "a1"
    assert cgroup.dirs == [path] and cgroup.leaves == [path / LEAF]
    assert (path / "memory.max").read_text() == str(64 * MiB)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "32"
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert cgroup.enforced == {"memory": True, "pids": True, "cpu": True}
    # Controllers reach the leaf (and child agents), so the agent's directory holds no process.
    assert cgroupfs.enabled(path) == {"cpu", "memory", "pids"}
    assert (path / LEAF / "memory.oom.group").read_text() == "1"
    assert (path / "memory.oom.group").read_text() == "0\n"
    cgroup.attach(1234)
    assert cgroupfs.procs(path / LEAF) == [1234]
    assert cgroupfs.procs(path) == []


def test_a_child_agent_nests_inside_its_parent(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    parent = driver.create("p1", Limits(pids=16))
    child = driver.create("c1", Limits(pids=8), parent=parent)
    grandchild = driver.create("g1", Limits(), parent=child)
    top = cgroupfs.root / "agentos" / "1-1"
    assert child.dirs == [top / "p1" / "c1"] and grandchild.dirs == [top / "p1" / "c1" / "g1"]
    assert cgroupfs.cgroups() == sorted(["agentos", "agentos/1-1", "agentos/1-1/p1", "agentos/1-1/p1/self",
                                         "agentos/1-1/p1/c1", "agentos/1-1/p1/c1/self",
                                         "agentos/1-1/p1/c1/g1", "agentos/1-1/p1/c1/g1/self"])
    assert (top / "p1" / "c1" / "pids.max").read_text() == "8"
    # The grandchild's controllers come down through both ancestors.
    assert (top / "p1" / "c1" / "g1" / "pids.max").exists()
    assert parent.children == {child} and child.children == {grandchild} and child.parent is parent


def test_only_the_controllers_the_driver_has_are_delegated(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root, frozenset({"cpu"}))
    assert driver.enforceable == {"cpu"}
    cgroup = driver.create("a1", Limits(memory=MiB, pids=4, cpu=1.0))
    assert cgroup.enforced == {"memory": False, "pids": False, "cpu": True}
    assert cgroupfs.enabled(cgroup.dirs[0]) == {"cpu"}
    assert not (cgroup.dirs[0] / "memory.max").exists()
    assert not (cgroup.leaves[0] / "memory.oom.group").exists()


def test_without_controllers_nothing_is_delegated(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root, frozenset())
    cgroup = driver.create("a1", Limits())
    assert (cgroup.dirs[0] / "cgroup.subtree_control").read_text() == ""
    assert cgroup.leaves[0].is_dir()


def test_stats_are_the_agents_own_and_throttling_its_limits(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    cgroup = driver.create("a1", Limits(cpu=0.5))
    leaf, path = cgroup.leaves[0], cgroup.dirs[0]
    (leaf / "memory.current").write_text("1048576\n")
    (leaf / "memory.peak").write_text("4194304\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "cpu.stat").write_text("usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n"
                                   "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    (path / "cpu.stat").write_text("usage_usec 900000\nnr_periods 40\nnr_throttled 12\nthrottled_usec 90000\n")
    (path / "memory.current").write_text("99999999\n")  # the subtree's: not the agent's own
    stats = cgroup.stats()
    assert stats.memory_current == 1048576
    assert stats.memory_peak == 4194304
    assert stats.pids_current == 3
    assert stats.cpu_usage_usec == 250000
    assert (stats.cpu_nr_periods, stats.cpu_nr_throttled, stats.cpu_throttled_usec) == (40, 12, 90000)
    assert stats.oom_kills == 1


def test_oom_kill_is_read_from_the_leafs_memory_events(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    cgroup = driver.create("a1", Limits(memory=MiB))
    (cgroup.dirs[0] / "memory.events").write_text("oom 1\noom_kill 1\n")  # a child agent's kill
    events = cgroup.leaves[0] / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
    assert not cgroup.oom_killed()
    events.write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert cgroup.oom_killed()


def test_counters_missing_are_none(cgroupfs: FakeCgroupfs) -> None:
    cgroup = started(cgroupfs.root).create("a1", Limits())
    stats = cgroup.stats()
    assert stats.memory_peak is None and stats.oom_kills is None
    assert not cgroup.oom_killed()


def test_kill_uses_the_leafs_cgroup_kill(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    parent = driver.create("a1", Limits())
    child = driver.create("c1", Limits(), parent=parent)
    (parent.leaves[0] / "cgroup.procs").write_text("4242\n4243\n")
    assert parent.kill() == 2
    assert (parent.leaves[0] / "cgroup.kill").read_text() == "1"
    # Not the agent's directory: that would kill the child agent too.
    assert (parent.dirs[0] / "cgroup.kill").read_text() == ""
    assert (child.leaves[0] / "cgroup.kill").read_text() == ""


def test_kill_without_cgroup_kill_signals_each_process(cgroupfs: FakeCgroupfs, held) -> None:
    cgroup = started(cgroupfs.root).create("a1", Limits())
    (cgroup.leaves[0] / "cgroup.kill").unlink()
    child, stray = held(), held()
    (cgroup.leaves[0] / "cgroup.procs").write_text(f"{child.pid}\n")
    # A process that moved itself into the agent's directory is the agent's too.
    (cgroup.dirs[0] / "cgroup.procs").write_text(f"{stray.pid}\n")
    assert cgroup.procs() == sorted([child.pid, stray.pid])
    assert cgroup.kill() == 2
    assert child.wait() == -signal.SIGKILL
    assert stray.wait() == -signal.SIGKILL


@pytest.mark.parametrize("agent_id", ["../escape", LEAF, "", "a/b", "x" * 65])
def test_ids_that_cannot_name_an_agent_cgroup_are_refused(cgroupfs: FakeCgroupfs, agent_id: str) -> None:
    driver = started(cgroupfs.root)
    with pytest.raises(ValueError):
        driver.create(agent_id, Limits())
    assert cgroupfs.cgroups() == ["agentos", "agentos/1-1"]


def test_a_parent_must_be_a_live_cgroup_of_the_same_driver(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    parent = driver.create("p1", Limits())
    with pytest.raises(TypeError):
        driver.create("c1", Limits(), parent=NoDriver("test").create("p2", Limits()))
    assert parent.remove()
    with pytest.raises(CgroupError):
        driver.create("c1", Limits(), parent=parent)
    assert cgroupfs.cgroups() == ["agentos", "agentos/1-1"]


def test_an_existing_directory_is_never_taken_over(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    first = driver.create("a1", Limits())
    first.attach(4242)
    with pytest.raises(FileExistsError):
        driver.create("a1", Limits(pids=1))
    assert cgroupfs.procs(first.leaves[0]) == [4242]
    assert (first.dirs[0] / "pids.max").read_text() == "max\n"


@pytest.mark.parametrize("order", ["parent first", "child first"])
def test_a_parents_directory_goes_with_its_last_child(cgroupfs: FakeCgroupfs, order: str) -> None:
    driver = started(cgroupfs.root)
    parent = driver.create("p1", Limits(pids=16))
    one = driver.create("c1", Limits(), parent=parent)
    two = driver.create("c2", Limits(), parent=parent)
    removals = [parent, one, two] if order == "parent first" else [one, parent, two]
    for cgroup in removals[:-1]:
        assert cgroup.remove()
        assert not cgroup.leaves[0].exists()
        # The parent's limits still bound the remaining child.
        assert (parent.dirs[0] / "pids.max").read_text() == "16"
    assert removals[-1].remove()
    assert cgroupfs.cgroups() == ["agentos", "agentos/1-1"]
    assert parent.children == frozenset()


def test_remove_waits_for_the_agents_own_processes(cgroupfs: FakeCgroupfs) -> None:
    driver = started(cgroupfs.root)
    parent = driver.create("p1", Limits())
    (parent.leaves[0] / "cgroup.procs").write_text("4242\n")
    assert not parent.remove() and not parent.removed
    assert parent.dirs[0].exists()
    (parent.leaves[0] / "cgroup.procs").write_text("")
    assert parent.remove() and parent.removed
    assert cgroupfs.cgroups() == ["agentos", "agentos/1-1"]


@pytest.mark.parametrize("module, name", [(base, "mkdir"), (v2, "write")], ids=["mkdir", "write"])
def test_every_failure_of_create_removes_what_it_made(cgroupfs: FakeCgroupfs, monkeypatch: pytest.MonkeyPatch,
                                                      module: object, name: str) -> None:
    driver = started(cgroupfs.root)
    limits = Limits(memory=MiB, pids=4, cpu=0.5)
    parent = driver.create("p0", limits)

    def tree() -> object:
        return cgroupfs.cgroups(), parent.children

    every_failure_of_create_leaves_nothing(monkeypatch, module, name,
                                           lambda agent: driver.create(agent, limits, parent=parent),
                                           tree, least_calls=2)
    assert parent.remove()


def test_nested_trees_of_a_dead_kernel_are_removed_depth_first(cgroupfs: FakeCgroupfs) -> None:
    dead = started(cgroupfs.root, instance=dead_instance())
    a = dead.create("a", Limits(pids=8))
    b = dead.create("b", Limits(), parent=a)
    dead.create("c", Limits(), parent=b)
    dead.create("d", Limits(), parent=a)
    dead.create("e", Limits())
    fresh = V2Driver(cgroupfs.root, ALL, instance="1-1")
    stale = fresh.start()
    names = [cgroup.agent_id for cgroup in stale]
    assert sorted(names) == ["a", "b", "c", "d", "e"]
    assert names.index("a") < names.index("b") < names.index("c") and names.index("a") < names.index("d")
    by_name = {cgroup.agent_id: cgroup for cgroup in stale}
    assert by_name["c"].parent is by_name["b"] and by_name["b"].parent is by_name["a"]
    # Any order of completion works: a directory goes once everything below it has.
    assert all(asyncio.run(_destroy_all(stale)))
    fresh.prune()
    assert cgroupfs.cgroups() == ["agentos", "agentos/1-1"]


async def _destroy_all(cgroups: list[AgentCgroup]) -> list[bool]:
    return list(await asyncio.gather(*(destroy(cgroup) for cgroup in cgroups)))


def test_v1_memory_hierarchy_is_turned_on_where_the_kernel_left_it_off(tmp_path: Path) -> None:
    mounts = {ctl: tmp_path / ctl for ctl in ("memory", "pids", "cpu")}
    for directory in mounts.values():
        directory.mkdir()
    instance = mounts["memory"] / "agentos" / "1-1"
    instance.mkdir(parents=True)
    (instance / "memory.use_hierarchy").write_text("0\n")
    V1Driver(mounts, instance="1-1").start()
    assert (instance / "memory.use_hierarchy").read_text() == "1"
