"""Nested agent cgroups on this host's real hierarchies (root): a parent's limits bound its subtree.

On the CI host (hybrid) memory, pids and cpu are v1 hierarchies; the v2 mount has no
controllers, so v2 shows the layout and the kill/remove semantics, v1 the limits.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agentos.cgroups import AgentCgroup, CgroupDriver, Limits, V1Driver, V2Driver, base, destroy
from agentos.cgroups import v1 as v1_module

from .conftest import dead_instance, every_failure_of_create_leaves_nothing

MiB = 1024 * 1024

#: Forks sleeping children until the kernel refuses, prints how many, then waits to be killed.
FORKER = ("import os, time\nforked = 0\n"
          "for _ in range(64):\n"
          "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
          "    if pid == 0:\n        time.sleep(120)\n        os._exit(0)\n"
          "    forked += 1\n"
          "print(forked, flush=True)\ntime.sleep(120)")


def destroy_all(*cgroups: AgentCgroup) -> list[bool]:
    async def run() -> list[bool]:
        return list(await asyncio.gather(*(destroy(cgroup) for cgroup in cgroups)))
    return asyncio.run(run())


def test_v1_a_parents_pids_limit_bounds_its_children_together(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits(pids=16))
    # Each child alone may have 16 tasks; together with the parent they may not.
    kids = [v1.create(f"kid{i}", Limits(pids=16), parent=parent) for i in range(2)]
    own = held()
    parent.attach(own.pid)
    forkers = [held(FORKER) for _ in kids]
    for kid, forker in zip(kids, forkers, strict=True):
        kid.attach(forker.pid)
    try:
        counts = []
        for forker in forkers:
            forker.release()
            counts.append(int(forker.line()))
        # Three tasks were there (the parent's own and the two forkers): 13 more fit, in total.
        assert counts == [13, 0]
        assert int((parent.by_controller["pids"] / "pids.current").read_text()) == 16  # type: ignore[attr-defined]
        assert [kid.stats().pids_current for kid in kids] == [14, 1]
        assert parent.stats().pids_current == 1  # its own: children's tasks are theirs
    finally:
        assert all(destroy_all(parent, *kids))


def test_v1_a_parents_memory_limit_bounds_its_children_together(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits(memory=64 * MiB))
    kids = [v1.create(f"kid{i}", Limits(memory=64 * MiB), parent=parent) for i in range(2)]
    # Pages are charged to the cgroup that first touches them: these are touched after attach.
    holder = held("import time\ndata = bytearray(b'x') * (40 * 1024 * 1024)\nprint('held', flush=True)\n"
                  "time.sleep(120)")
    grower = held("import time\nchunks = [bytearray(b'x') * (4 * 1024 * 1024) for _ in range(10)]\n"
                  "print('grown', flush=True)\ntime.sleep(120)")
    kids[0].attach(holder.pid)
    kids[1].attach(grower.pid)
    try:
        holder.release()
        assert holder.line() == "held"
        grower.release()
        grower.line()  # 40 + 40 MiB cannot fit in the parent's 64: someone is OOM-killed first
        victims = [kid.agent_id for kid in kids if kid.oom_killed()]
        assert len(victims) == 1
        victim = holder if victims == ["kid0"] else grower
        assert victim.wait() == -signal.SIGKILL
        peak = int((parent.by_controller["memory"] / "memory.max_usage_in_bytes").read_text())  # type: ignore[attr-defined]
        assert peak <= 64 * MiB
        assert not parent.oom_killed()  # none of the parent's own processes died
    finally:
        assert all(destroy_all(parent, *kids))


def test_v1_an_agent_has_one_memory_cgroup_which_counts_its_own_pages(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits(memory=256 * MiB))
    kid = v1.create("kid", Limits(), parent=parent)
    memory = parent.by_controller["memory"]  # type: ignore[attr-defined]
    # Every memory cgroup costs the host a shrinker map (docs/sandboxes.md): no leaf in that hierarchy,
    # the agent's processes are in its directory itself; the other hierarchies keep their leaf.
    assert sorted(entry.name for entry in memory.iterdir() if entry.is_dir()) == ["kid"]
    assert memory in parent.leaves and all(leaf.is_dir() for leaf in parent.leaf_dirs)
    eater = held("import time\ndata = bytearray(b'x') * (48 * 1024 * 1024)\nprint('held', flush=True)\n"
                 "time.sleep(120)")
    mine = held()
    kid.attach(eater.pid)
    parent.attach(mine.pid)
    try:
        assert int((memory / "cgroup.procs").read_text()) == mine.pid
        eater.release()
        assert eater.line() == "held"
        # The directory counts the kid's 48 MiB too; the parent's own figure leaves it out.
        assert int((memory / "memory.usage_in_bytes").read_text()) >= 48 * MiB
        own = parent.stats()
        assert own.memory_current is not None and own.memory_current < 16 * MiB
        assert own.memory_peak is None  # v1 keeps only the subtree's peak
        kids = kid.stats()
        assert kids.memory_current is not None and kids.memory_current >= 48 * MiB
        assert kids.memory_peak is not None and kids.memory_peak >= 48 * MiB
        assert parent.procs() == [mine.pid] and kid.procs() == [eater.pid]
    finally:
        assert all(destroy_all(parent, kid))
    assert not memory.exists()


def test_v1_a_parents_cpu_limit_throttles_its_children(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits(cpu=0.1))
    kid = v1.create("kid", Limits(), parent=parent)
    # v1 refuses a quota above an ancestor's (EINVAL): the driver writes the smaller one, as v2 would use.
    greedy = v1.create("greedy", Limits(cpu=2.0), parent=kid)
    by = greedy.by_controller  # type: ignore[attr-defined]
    assert (by["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "10000"
    assert greedy.enforced == {"cpu": True}
    spin = held("import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass")
    greedy.attach(spin.pid)
    spin.release()
    assert spin.wait() == 0
    # 0.2 s of CPU at 10 ms per 100 ms period needs ~20 periods, throttled at the parent.
    stats = parent.stats()
    assert stats.cpu_nr_throttled is not None and stats.cpu_nr_throttled >= 10
    assert greedy.stats().cpu_usage_usec is not None and greedy.stats().cpu_usage_usec >= 200_000  # type: ignore[operator]
    assert parent.stats().cpu_usage_usec == 0  # its own processes used nothing
    assert greedy.remove() and kid.remove() and parent.remove()


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_killing_and_removing_a_parent_spares_its_children(kind: str, held, request) -> None:
    driver: CgroupDriver = request.getfixturevalue(kind)
    parent = driver.create("parent", Limits(pids=8))
    child = driver.create("child", Limits(), parent=parent)
    mine = held("import subprocess, time\nsubprocess.Popen(['sleep', '120'])\ntime.sleep(120)")
    theirs = held()
    parent.attach(mine.pid)
    child.attach(theirs.pid)
    mine.release()
    theirs.release()
    while len(parent.procs()) < 2:  # the parent's process and the sleep it forks
        pass
    assert theirs.pid not in parent.procs() and child.procs() == [theirs.pid]
    assert destroy_all(parent) == [True]
    assert mine.wait() == -signal.SIGKILL
    assert theirs.proc.poll() is None, "the child agent was killed with its parent"
    # The parent's limits keep bounding the child: its directory stays until the child's goes
    # (v1's memory directory is also its leaf: empty now).
    assert not any(leaf.exists() for leaf in parent.leaf_dirs) and parent.procs() == []
    assert all(directory.is_dir() for directory in parent.dirs)
    assert destroy_all(child) == [True]
    assert theirs.wait() == -signal.SIGKILL
    assert not any(directory.exists() for directory in parent.dirs)


def test_agent_of_names_the_innermost_agent(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits())
    child = v1.create("child", Limits(), parent=parent)
    outer, inner = held(), held()
    parent.attach(outer.pid)
    child.attach(inner.pid)
    try:
        assert v1.agent_of(outer.pid) == "parent"
        assert v1.agent_of(inner.pid) == "child"
        assert v1.agent_of(os.getpid()) is None
        assert V1Driver(v1.mounts, "1-1").agent_of(inner.pid) is None  # another kernel's view
    finally:
        assert all(destroy_all(child, parent))


def _tree(driver: CgroupDriver) -> list[str]:
    return sorted(str(path.relative_to(directory)) for directory in driver.instance_dirs()
                  for path in directory.rglob("*") if path.is_dir())


@pytest.mark.parametrize("module, name", [(base, "mkdir"), (v1_module, "write")], ids=["mkdir", "write"])
def test_v1_every_failure_of_create_removes_what_it_made(v1: V1Driver, monkeypatch: pytest.MonkeyPatch,
                                                         module: object, name: str) -> None:
    limits = Limits(memory=64 * MiB, pids=8, cpu=0.5)
    parent = v1.create("parent", limits)
    every_failure_of_create_leaves_nothing(monkeypatch, module, name,
                                           lambda agent: v1.create(agent, limits, parent=parent),
                                           lambda: _tree(v1), least_calls=4)  # memory, memsw, pids, cpu quota
    assert parent.remove()


def test_v1_create_never_removes_a_directory_it_did_not_make(v1: V1Driver) -> None:
    parent = v1.create("parent", Limits())
    theirs = parent.by_controller["freezer"] / "child"  # type: ignore[attr-defined]
    os.mkdir(theirs)
    try:
        with pytest.raises(FileExistsError):
            v1.create("child", Limits(pids=4), parent=parent)
        assert theirs.is_dir()
        assert not (parent.by_controller["pids"] / "child").exists()  # type: ignore[attr-defined]
    finally:
        os.rmdir(theirs)
    assert parent.remove()


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_nested_trees_of_a_dead_kernel_are_killed_and_removed(kind: str, held, request) -> None:
    if kind == "v1":
        mounts: dict[str, Path] = request.getfixturevalue("v1_mounts")
        dead: CgroupDriver = V1Driver(mounts, dead_instance())
        fresh: CgroupDriver = V1Driver(mounts)
    else:
        mount, controllers = request.getfixturevalue("v2_mount")
        dead, fresh = V2Driver(mount, controllers, dead_instance()), V2Driver(mount, controllers)
    dead.start()
    top = dead.create("top", Limits(pids=32))
    middle = dead.create("middle", Limits(), parent=top)
    bottom = dead.create("bottom", Limits(), parent=middle)
    survivors = [held(), held()]
    top.attach(survivors[0].pid)
    bottom.attach(survivors[1].pid)
    try:
        stale = fresh.start()
        assert [cgroup.agent_id for cgroup in stale] == ["top", "middle", "bottom"]
        assert all(destroy_all(*reversed(stale)))  # even bottom-up requests finish depth-first
        fresh.prune()
        assert [survivor.wait() for survivor in survivors] == [-signal.SIGKILL] * 2
        assert [d for d in dead.instance_dirs() if d.exists()] == []
    finally:
        fresh.stop()


def test_v1_own_memory_holds_while_the_loop_adds_a_child_meanwhile(tmp_path: Path) -> None:
    """A parent's own memory is read in a teardown or LIST thread while the loop adds or drops
    its child agents: the read walks a copy of the children, never the set being changed."""
    parent_dir = tmp_path / "parent"
    parent_dir.mkdir()
    (parent_dir / "memory.usage_in_bytes").write_text("1000\n")
    parent = v1_module.V1Cgroup("parent", {"memory": str(parent_dir)})

    class Meddling(v1_module.V1Cgroup):
        """A child whose read lets the loop add a sibling mid-walk, as the loop thread can."""

        def _int(self, controller: str, name: str, leaf: bool = True) -> int | None:
            parent._add_child(v1_module.V1Cgroup("sibling", {"memory": str(tmp_path / "sibling")}, parent))
            return 300

    parent._add_child(Meddling("child", {"memory": str(tmp_path / "child")}, parent))
    assert parent.stats().memory_current == 700
