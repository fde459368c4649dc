"""``clean_dead_kernels``: what ``agentos down`` and ``doctor --fix`` do after a kernel's ``kill -9``.
It removes the agent cgroups of kernels that are gone, killing what still runs in them, and
leaves a live kernel's subtree, other names under ``agentos/`` and everything else alone.
It never makes a subtree of its own."""
from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable

import pytest

from agentos.cgroups import TOP, CgroupDriver, Limits, V1Driver, V2Driver, clean_dead_kernels, instance_name

from .conftest import FakeCgroupfs, dead_instance


def test_fake_v2_dead_kernels_trees_go_live_and_foreign_ones_stay(cgroupfs: FakeCgroupfs) -> None:
    controllers = frozenset({"cpu", "memory", "pids"})
    dead = V2Driver(cgroupfs.root, controllers, instance=dead_instance())
    dead.start()
    parent = dead.create("parent", Limits(pids=8))
    dead.create("child", Limits(), parent=parent)
    dead.create("other", Limits())
    alive = V2Driver(cgroupfs.root, controllers, instance=instance_name(1))
    alive.start()
    alive.create("kept", Limits())
    (cgroupfs.root / TOP / "not-an-instance").mkdir()
    cleaner = V2Driver(cgroupfs.root, controllers)

    report = clean_dead_kernels(cleaner)

    assert sorted(report.removed) == ["child", "other", "parent"] and report.failed == []
    assert cgroupfs.cgroups() == sorted([TOP, f"{TOP}/{alive.instance}", f"{TOP}/{alive.instance}/kept",
                                         f"{TOP}/{alive.instance}/kept/self", f"{TOP}/not-an-instance"])
    assert clean_dead_kernels(cleaner).removed == []


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_on_this_host_a_dead_kernels_agents_are_killed_and_removed(kind: str, held, request) -> None:
    make: Callable[[str | None], CgroupDriver]
    if kind == "v1":
        make = functools.partial(V1Driver, request.getfixturevalue("v1_mounts"))
    else:
        mount, controllers = request.getfixturevalue("v2_mount")
        make = functools.partial(V2Driver, mount, controllers)
    dead = make(dead_instance())
    dead.start()
    top = dead.create("top", Limits(pids=16))
    nested = dead.create("nested", Limits(), parent=top)
    survivors = [held(), held()]
    top.attach(survivors[0].pid)
    nested.attach(survivors[1].pid)
    alive = make(instance_name(1))  # pid 1 lives: its subtree is never touched
    alive.start()
    stray = [root / TOP / "not-an-instance" for root in dead.roots]
    for directory in stray:
        os.mkdir(directory)
    cleaner = make(None)
    try:
        report = clean_dead_kernels(cleaner)
        assert sorted(report.removed) == ["nested", "top"] and report.failed == []
        assert [survivor.wait() for survivor in survivors] == [-signal.SIGKILL] * 2
        assert [d for d in dead.instance_dirs() if d.exists()] == []
        assert all(d.exists() for d in alive.instance_dirs()) and all(d.exists() for d in stray)
        assert [d for d in cleaner.instance_dirs() if d.exists()] == []  # it made nothing of its own
    finally:
        for directory in stray:
            os.rmdir(directory)
        alive.stop()
