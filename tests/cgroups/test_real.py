"""Both drivers on this host's real hierarchies (root): v1 limits and kills, v2 tree tracking."""
from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import agentos.cgroups.v1 as v1_module
from agentos.cgroups import TOP, CgroupDriver, Limits, V1Driver, V2Driver, destroy, instance_name
from agentos.cgroups.limits import MAX_CPU, MAX_MEMORY, MAX_PIDS, PID_MAX_LIMIT

from .conftest import dead_instance

MiB = 1024 * 1024


def test_v1_limits_are_in_the_kernel(v1: V1Driver) -> None:
    cgroup = v1.create("limits", Limits(memory=64 * MiB, pids=16, cpu=0.25))
    try:
        by = cgroup.by_controller  # type: ignore[attr-defined]
        assert int((by["memory"] / "memory.limit_in_bytes").read_text()) == 64 * MiB
        assert (by["pids"] / "pids.max").read_text().strip() == "16"
        assert (by["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (by["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert cgroup.enforced == {"memory": True, "pids": True, "cpu": True}
    finally:
        assert cgroup.remove()


def test_v1_cpu_limit_is_one_write(v1: V1Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each write of cpu.cfs_quota_us or cpu.cfs_period_us walks every cpu cgroup on the host
    (issue 17: a spawn's cost grew with the agents alive): the period, already the default in a
    new cgroup, is not written, made or adopted, and the limit is still the one asked for."""
    written: list[str] = []
    real_write = v1_module.write

    def recording(path: str, value: str) -> None:
        written.append(os.path.basename(path))
        real_write(path, value)

    monkeypatch.setattr(v1_module, "write", recording)
    made = v1.create("cpu-once", Limits(cpu=0.25))
    spare = v1.create("cpu-spare", Limits())
    adopted = v1.prepare("cpu-adopted", Limits(cpu=0.5))
    try:
        v1.adopt(spare, adopted)
        assert [name for name in written if name.startswith("cpu.")] == ["cpu.cfs_quota_us"] * 2
        for cgroup, quota in ((made, "25000"), (adopted, "50000")):
            by = cgroup.by_controller  # type: ignore[attr-defined]
            assert (by["cpu"] / "cpu.cfs_quota_us").read_text().strip() == quota
            assert (by["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    finally:
        assert made.remove()
        assert adopted.remove()


def test_v1_the_largest_limits_are_accepted_by_the_kernel(v1: V1Driver) -> None:
    cgroup = v1.create("largest", Limits(memory=MAX_MEMORY, pids=MAX_PIDS, cpu=MAX_CPU))
    assert cgroup.enforced == {"memory": True, "pids": True, "cpu": True}
    assert (cgroup.by_controller["pids"] / "pids.max").read_text().strip() == str(PID_MAX_LIMIT)  # type: ignore[attr-defined]
    assert cgroup.remove()


def test_v1_attach_stats_kill_remove(v1: V1Driver, held) -> None:
    cgroup = v1.create("tree", Limits(pids=32))
    child = held("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)")
    cgroup.attach(child.pid)
    child.release()
    while len(cgroup.procs()) < 2:  # the child and the grandchild it forks
        pass
    assert cgroup.stats().pids_current == 2
    assert not cgroup.remove()  # busy
    asyncio.run(destroy(cgroup))
    assert child.wait() == -signal.SIGKILL
    assert all(not d.exists() for d in cgroup.dirs)


def test_v1_adopt_makes_a_spare_holding_a_process_the_agents_cgroup(v1: V1Driver, held) -> None:
    """A spare cgroup made ahead, a process moved in, then adopted as an agent's: the process is in
    the agent's cgroup without a move (the same directories, renamed), under the agent's limits."""
    spare = v1.create("spare-adopt", Limits())
    child = held()
    spare.attach(child.pid)
    inodes = [d.stat().st_ino for d in spare.dirs]
    cgroup = v1.prepare("adopted", Limits(memory=64 * MiB, pids=16, cpu=0.25))
    v1.adopt(spare, cgroup)
    try:
        assert [d.stat().st_ino for d in cgroup.dirs] == inodes
        assert all(not d.exists() for d in spare.dirs)
        assert cgroup.procs() == [child.pid]
        by = cgroup.by_controller  # type: ignore[attr-defined]
        assert int((by["memory"] / "memory.limit_in_bytes").read_text()) == 64 * MiB
        assert (by["pids"] / "pids.max").read_text().strip() == "16"
        assert (by["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert cgroup.enforced == {"memory": True, "pids": True, "cpu": True}
    finally:
        asyncio.run(destroy(cgroup))


def test_v1_adopt_refuses_a_nested_cgroup_and_leaves_the_spare_whole(v1: V1Driver) -> None:
    """A rename stays in its parent: a child agent's cgroup cannot be a spare made at the top."""
    spare = v1.create("spare-nested", Limits())
    parent = v1.create("parent", Limits())
    try:
        with pytest.raises(OSError):
            v1.adopt(spare, v1.prepare("child", Limits(pids=8), parent=parent))
        assert all(d.is_dir() for d in spare.dirs)
    finally:
        assert spare.remove()
        assert parent.remove()


def test_v1_destroy_in_an_executor_reads_the_cgroup_last_once_empty(v1: V1Driver, held) -> None:
    """destroy tries to remove at once, then kills what is still inside and tries again, each
    attempt in the executor; the counters it hands on_empty last are those of an empty cgroup."""
    cgroup = v1.create("executor", Limits(pids=32))
    child = held("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)")
    cgroup.attach(child.pid)
    child.release()
    while len(cgroup.procs()) < 2:
        pass
    seen: list[tuple[str, list[int]]] = []

    def on_empty() -> None:
        seen.append((threading.current_thread().name, cgroup.procs()))

    with ThreadPoolExecutor(1, thread_name_prefix="teardown") as executor:
        assert asyncio.run(destroy(cgroup, on_empty=on_empty, executor=executor))
    assert child.wait() == -signal.SIGKILL
    assert len(seen[0][1]) == 2, "the first attempt found the tree alive"
    assert seen[-1][1] == [], "the last reading was of an empty cgroup"
    assert {thread for thread, _ in seen} == {"teardown_0"}
    assert all(not d.exists() for d in cgroup.dirs)


def test_v1_oom_kill_is_detected(v1: V1Driver, held) -> None:
    cgroup = v1.create("hog", Limits(memory=32 * MiB))
    hog = held("chunks = []\nwhile True:\n    chunks.append(bytearray(4 * 1024 * 1024))")
    cgroup.attach(hog.pid)
    assert not cgroup.oom_killed()
    hog.release()
    assert hog.wait() == -signal.SIGKILL
    assert cgroup.oom_killed()
    stats = cgroup.stats()
    assert stats.oom_kills and stats.oom_kills >= 1
    assert stats.memory_peak is not None and stats.memory_peak <= 32 * MiB
    assert cgroup.remove()


def test_v1_pids_limit_stops_forks(v1: V1Driver, held) -> None:
    cgroup = v1.create("forks", Limits(pids=5))
    code = ("import os, time\nforked = 0\n"
            "for _ in range(50):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
            "    forked += 1\n"
            "raise SystemExit(forked)")
    child = held(code)
    cgroup.attach(child.pid)
    child.release()
    assert child.wait() == 4  # itself plus four children reach pids.max = 5
    asyncio.run(destroy(cgroup))


def test_v1_cpu_quota_throttles(v1: V1Driver, held) -> None:
    cgroup = v1.create("spin", Limits(cpu=0.1))
    spin = held("import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass")
    cgroup.attach(spin.pid)
    spin.release()
    assert spin.wait() == 0
    stats = cgroup.stats()
    assert stats.cpu_usage_usec is not None and stats.cpu_usage_usec >= 300_000
    # 0.3 s of CPU at 10 ms per 100 ms period cannot fit in fewer than ~30 periods.
    assert stats.cpu_nr_throttled is not None and stats.cpu_nr_throttled >= 20
    assert stats.cpu_nr_periods is not None and stats.cpu_nr_periods >= 25
    assert cgroup.remove()


def test_v2_tracks_and_kills_a_tree(v2: V2Driver, held) -> None:
    cgroup = v2.create("tree", Limits())
    child = held("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)")
    cgroup.attach(child.pid)
    child.release()
    while len(cgroup.procs()) < 2:
        pass
    assert (cgroup.leaves[0] / "cgroup.kill").exists()
    assert asyncio.run(destroy(cgroup))
    assert child.wait() == -signal.SIGKILL
    assert not cgroup.dirs[0].exists()


def test_v2_reports_limits_it_cannot_enforce(v2: V2Driver) -> None:
    cgroup = v2.create("nolimits", Limits(memory=MiB, pids=4, cpu=1.0))
    try:
        for name, ok in cgroup.enforced.items():
            assert ok == (name in v2.enforceable)
    finally:
        assert cgroup.remove()


def test_v2_delegation_is_checked_against_the_kernel(v2_mount: tuple[Path, frozenset[str]]) -> None:
    mount, controllers = v2_mount
    # Claim memory is there either way: on a hybrid host the kernel refuses "+memory"
    # (v1 holds it) and the driver must notice; on a v2 host it must be delegated.
    driver = V2Driver(mount, controllers | {"memory"})
    driver.start()
    try:
        assert ("memory" in driver.enforceable) == ("memory" in controllers)
    finally:
        driver.stop()


@pytest.mark.parametrize("driver_kind", ["v1", "v2"])
def test_start_cleans_only_dead_agentos_subtrees(driver_kind: str, held, request) -> None:
    make: Callable[[str | None], CgroupDriver]
    if driver_kind == "v1":
        mounts = request.getfixturevalue("v1_mounts")
        make = functools.partial(V1Driver, mounts)
    else:
        mount, controllers = request.getfixturevalue("v2_mount")
        make = functools.partial(V2Driver, mount, controllers)
    dead = make(dead_instance())
    dead.start()
    leftover = dead.create("orphan", Limits())
    survivor = held()
    leftover.attach(survivor.pid)
    alive = make(instance_name(1))  # pid 1 lives: its subtree is never touched
    alive.start()
    stray = [root / TOP / "not-an-instance" for root in dead.roots]
    for directory in stray:
        os.mkdir(directory)
    try:
        fresh = make(None)
        stale = fresh.start()
        assert [c.agent_id for c in stale] == ["orphan"]
        assert asyncio.run(destroy(stale[0]))
        fresh.prune()
        assert survivor.wait() == -signal.SIGKILL
        assert all(not d.exists() for d in dead.instance_dirs())
        assert all(d.exists() for d in alive.instance_dirs())
        assert all(d.exists() for d in stray)
        fresh.stop()
    finally:
        for directory in stray:
            os.rmdir(directory)
        alive.stop()


def test_stop_keeps_agentos_used_by_another_kernel(v1_mounts: dict[str, Path]) -> None:
    mounts = v1_mounts
    ours, theirs = V1Driver(mounts), V1Driver(mounts, instance_name(1))
    ours.start()
    theirs.start()
    ours.stop()
    assert all(d.exists() for d in theirs.instance_dirs())
    assert all(not d.exists() for d in ours.instance_dirs())
    theirs.stop()
    assert all(not Path(d).exists() for d in theirs.instance_dirs())
