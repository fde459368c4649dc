"""The freezer verbs: v1 ``freezer.state`` and v2 ``cgroup.freeze`` on this host's real hierarchies,
and v2 against the fake cgroupfs, where the test plays the kernel for ``frozen`` in cgroup.events."""
from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from agentos.cgroups import AgentCgroup, CgroupError, Limits, NoDriver, V1Driver, V2Driver, destroy, freeze, thaw
from agentos.cgroups import freezer as freezer_module

from .conftest import FakeCgroupfs

SPIN = "while True: pass"


def _cpu(cgroup: AgentCgroup) -> int:
    usage = cgroup.stats().cpu_usage_usec
    assert usage is not None
    return usage


def _spinning(cgroup: AgentCgroup, held) -> object:
    child = held(SPIN)
    cgroup.attach(child.pid)
    child.release()
    while _cpu(cgroup) == 0:
        pass
    return child


def _frozen_stays_still_then_thaws(cgroup: AgentCgroup) -> None:
    asyncio.run(freeze([cgroup]))
    assert cgroup.frozen()
    before = _cpu(cgroup)
    time.sleep(0.2)  # a spinning task would use ~all of it; a frozen one uses none
    assert _cpu(cgroup) == before
    thaw([cgroup])
    assert not cgroup.frozen()
    while _cpu(cgroup) == before:
        pass


def test_v1_a_frozen_agent_uses_no_cpu_until_thawed(v1: V1Driver, held) -> None:
    assert v1.freezer and v1.describe()["freezer"] is True
    cgroup = v1.create("spin", Limits())
    child = _spinning(cgroup, held)
    _frozen_stays_still_then_thaws(cgroup)
    assert asyncio.run(destroy(cgroup))
    assert child.wait() == -signal.SIGKILL  # type: ignore[attr-defined]


def test_v1_killing_a_frozen_agent_completes(v1: V1Driver, held) -> None:
    cgroup = v1.create("frozen", Limits())
    child = _spinning(cgroup, held)
    asyncio.run(freeze([cgroup]))
    # kill() freezes, signals and thaws: a frozen v1 task takes SIGKILL only once thawed.
    assert asyncio.run(destroy(cgroup))
    assert child.wait() == -signal.SIGKILL  # type: ignore[attr-defined]
    assert all(not d.exists() for d in cgroup.dirs)


def test_v1_freezing_a_parent_agent_leaves_its_child_agent_running(v1: V1Driver, held) -> None:
    parent = v1.create("parent", Limits())
    child = v1.create("child", Limits(), parent=parent)
    procs = [_spinning(parent, held), _spinning(child, held)]
    asyncio.run(freeze([parent]))
    before = _cpu(child)
    while _cpu(child) == before:  # the leaf is the unit: the service freezes each agent it means to
        pass
    assert parent.frozen() and not child.frozen()
    thaw([parent])
    for cgroup in (child, parent):
        assert asyncio.run(destroy(cgroup))
    for proc in procs:
        assert proc.wait() == -signal.SIGKILL  # type: ignore[attr-defined]


def test_v1_without_the_freezer_hierarchy_has_no_freezer(v1_mounts: dict[str, Path]) -> None:
    driver = V1Driver({c: p for c, p in v1_mounts.items() if c != "freezer"}, instance="1-1")
    assert not driver.freezer
    assert not NoDriver("none here").freezer


def test_v2_a_frozen_agent_uses_no_cpu_until_thawed(v2: V2Driver, held) -> None:
    assert v2.freezer
    cgroup = v2.create("spin", Limits())
    child = _spinning(cgroup, held)
    _frozen_stays_still_then_thaws(cgroup)
    asyncio.run(freeze([cgroup]))
    # A v2 frozen task takes a fatal signal (cgroup.kill) without being thawed.
    assert asyncio.run(destroy(cgroup))
    assert child.wait() == -signal.SIGKILL  # type: ignore[attr-defined]


def _fake(cgroupfs: FakeCgroupfs) -> tuple[V2Driver, AgentCgroup]:
    driver = V2Driver(cgroupfs.root, frozenset({"cpu", "memory", "pids"}), instance="1-1")
    driver.start()
    return driver, driver.create("a1", Limits())


def test_v2_fake_freeze_waits_for_the_kernel_to_report_frozen(cgroupfs: FakeCgroupfs) -> None:
    driver, cgroup = _fake(cgroupfs)
    assert driver.freezer
    leaf = cgroup.leaves[0]

    async def scenario() -> None:
        pausing = asyncio.create_task(freeze([cgroup]))
        await asyncio.sleep(0.05)
        assert (leaf / "cgroup.freeze").read_text() == "1"
        assert not pausing.done()  # FREEZING: asked, not yet reached
        (leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
        await pausing

    asyncio.run(scenario())
    assert cgroup.frozen()
    thaw([cgroup])
    assert (leaf / "cgroup.freeze").read_text() == "0"
    assert cgroup.remove()


def test_v2_fake_a_freeze_that_never_completes_is_undone(cgroupfs: FakeCgroupfs,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freezer_module, "_ATTEMPTS", 3)
    _, cgroup = _fake(cgroupfs)
    with pytest.raises(CgroupError, match="could not stop"):
        asyncio.run(freeze([cgroup]))
    assert (cgroup.leaves[0] / "cgroup.freeze").read_text() == "0"  # thawed: all or nothing
    assert cgroup.remove()


def test_v2_fake_a_cgroup_thawed_meanwhile_is_not_waited_for(cgroupfs: FakeCgroupfs) -> None:
    _, cgroup = _fake(cgroupfs)
    asyncio.run(freeze([cgroup], still=lambda c: False))
    thaw([cgroup])
    assert cgroup.remove()
    thaw([cgroup])  # gone: nothing to do, nothing raised


def test_v2_without_cgroup_freeze_has_no_freezer(cgroupfs: FakeCgroupfs) -> None:
    driver, cgroup = _fake(cgroupfs)
    (driver.instance_dirs()[0] / "cgroup.freeze").unlink()  # Linux before 5.2
    assert not driver.freezer and driver.describe()["freezer"] is False
    assert cgroup.remove()
