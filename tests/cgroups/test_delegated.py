"""A normal user's kernel in the v2 cgroup systemd delegated to it, on the fake cgroupfs.

The fake plays systemd and the kernel: a user's scope under ``user@UID.service`` with the
controllers the user manager offers, its directory and files handed to the user as
``Delegate=yes`` does (``FakeCgroupfs.delegate``), processes in it. The kernel is asked about
that uid (``open_driver(uid=...)``), so the refusals hold even when the tests run as root.
tests/cgroups/test_delegated_host.py runs the same as a real throwaway user on this host.
"""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from agentos.cgroups import (
    KERNEL_LEAF,
    TOP,
    AgentCgroup,
    CgroupError,
    Layout,
    Limits,
    NoDriver,
    V2Driver,
    base,
    detect,
    find_delegation,
    open_driver,
    remove_stale,
)
from agentos.cgroups import v2 as v2_module

from .conftest import FakeCgroupfs, dead_instance, fail_at

#: The user the kernel runs as: never the test's own uid, never root.
USER = 4242 if os.geteuid() != 4242 else 4243
SCOPE = f"user.slice/user-{USER}.slice/user@{USER}.service/app.slice/agentos.scope"
ALL = ("cpu", "memory", "pids")
MiB = 1024 * 1024
#: The kernel's own pid, the zygote it started before its cgroups, and the `agentos up` that started it.
PROCS = [os.getpid(), 1001, 1002]


def systemd_scope(cgroupfs: FakeCgroupfs, offered: tuple[str, ...] = ALL, procs: list[int] = PROCS,
                  delegated: bool = True) -> Path:
    """What `systemd-run --user --scope -p Delegate=yes agentos up FILE` makes: the scope, with
    ``offered`` enabled down to it, ``procs`` in it, and (``delegated``) handed to the user."""
    directory = cgroupfs.root
    for name in SCOPE.split("/"):
        if offered:
            cgroupfs.write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in offered))
        directory = directory / name
        cgroupfs.mkdir(directory)
    for pid in procs:
        cgroupfs.write(directory / "cgroup.procs", str(pid))
    if delegated:
        cgroupfs.delegate(directory)
    return directory


def layout_in(cgroupfs: FakeCgroupfs, own: str = SCOPE) -> Layout:
    """This host as a kernel started in ``own`` sees it: a pure v2 host."""
    return Layout(v2_mount=cgroupfs.root, v2_controllers=frozenset({"cpu", "io", "memory", "pids"}),
                  v2_own=f"/{own}")


def user_driver(cgroupfs: FakeCgroupfs, own: str = SCOPE, uid: int = USER) -> V2Driver:
    driver = open_driver(layout_in(cgroupfs, own), instance="1-1", uid=uid)
    assert isinstance(driver, V2Driver), getattr(driver, "reason", driver)
    return driver


def under(directory: Path) -> list[str]:
    """Every cgroup below ``directory``, relative to it."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_dir())


def remove_stale_now(driver: V2Driver, stale: list[AgentCgroup]) -> bool:
    return asyncio.run(remove_stale(driver, stale)).failed == []


def test_the_kernels_own_cgroup_is_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    (tmp_path / "mountinfo").write_text(f"41 31 0:38 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "cgroup").write_text(f"4:memory:/somewhere\n1:name=systemd:/x\n0::/{SCOPE}\n")
    layout = detect(tmp_path / "mountinfo", tmp_path / "cgroup")
    assert layout.v2_own == f"/{SCOPE}"
    assert layout.v2_own_dir == tmp_path / "unified" / SCOPE
    assert layout.to_dict()["v2_own_cgroup"] == str(tmp_path / "unified" / SCOPE)
    # A mount that shows only a subtree (a container's): paths are relative to its root ...
    (tmp_path / "mountinfo").write_text(f"41 31 0:38 /user.slice {tmp_path}/unified rw - cgroup2 cgroup2 rw\n")
    assert detect(tmp_path / "mountinfo", tmp_path / "cgroup").v2_own_dir == \
        tmp_path / "unified" / SCOPE.removeprefix("user.slice/")
    # ... and a cgroup outside it is not there at all.
    (tmp_path / "mountinfo").write_text(f"41 31 0:38 /system.slice {tmp_path}/unified rw - cgroup2 cgroup2 rw\n")
    assert detect(tmp_path / "mountinfo", tmp_path / "cgroup").v2_own_dir is None
    # A v1-only process table has no 0:: line.
    (tmp_path / "cgroup").write_text("4:memory:/somewhere\n")
    assert detect(tmp_path / "mountinfo", tmp_path / "cgroup").v2_own is None


def test_a_delegated_scope_gets_the_agents_and_every_limit(cgroupfs: FakeCgroupfs) -> None:
    scope = systemd_scope(cgroupfs)
    driver = user_driver(cgroupfs)
    assert driver.delegated and driver.roots == [scope]
    assert driver.start() == []
    # Every process the scope held went to the leaf first: only then could the scope enable
    # controllers for its children (the fake refuses it otherwise, as the kernel does).
    assert cgroupfs.procs(scope) == []
    assert sorted(cgroupfs.procs(scope / KERNEL_LEAF)) == sorted(PROCS)
    assert cgroupfs.enabled(scope) == set(ALL)
    assert driver.enforceable == {"memory", "pids", "cpu"}
    assert driver.describe()["delegated"] is True and driver.describe()["roots"] == [str(scope)]
    # The usual layout, under the scope.
    agent = driver.create("a1", Limits(memory=64 * MiB, pids=32, cpu=0.5))
    path = scope / TOP / "1-1" / "a1"
    assert agent.dirs == [path]
    assert agent.enforced == {"memory": True, "pids": True, "cpu": True}
    assert (path / "memory.max").read_text() == str(64 * MiB)
    assert (path / "pids.max").read_text() == "32"
    assert (path / "cpu.max").read_text() == "50000 100000"
    agent.attach(2001)
    assert cgroupfs.procs(agent.leaves[0]) == [2001]
    assert under(scope) == sorted([KERNEL_LEAF, TOP, f"{TOP}/1-1", f"{TOP}/1-1/a1", f"{TOP}/1-1/a1/self"])
    (agent.leaves[0] / "cgroup.procs").write_text("")  # the agent ended
    assert agent.remove()
    driver.stop()
    # As systemd made it: the processes back in the scope, no controller left on, nothing below.
    assert under(scope) == []
    assert sorted(cgroupfs.procs(scope)) == sorted(PROCS)
    assert cgroupfs.enabled(scope) == set()


def test_only_the_controllers_the_delegation_offers_are_enabled(cgroupfs: FakeCgroupfs) -> None:
    # systemd before 244 delegated only memory and pids to users.
    scope = systemd_scope(cgroupfs, offered=("memory", "pids"))
    driver = user_driver(cgroupfs)
    driver.start()
    assert cgroupfs.enabled(scope) == {"memory", "pids"}
    assert driver.enforceable == {"memory", "pids"}
    agent = driver.create("a1", Limits(memory=MiB, pids=4, cpu=1.0))
    assert agent.enforced == {"memory": True, "pids": True, "cpu": False}
    assert not (agent.dirs[0] / "cpu.max").exists()
    assert agent.remove()
    driver.stop()
    assert under(scope) == [] and cgroupfs.enabled(scope) == set()


def test_a_delegation_without_controllers_still_tracks_and_freezes(cgroupfs: FakeCgroupfs) -> None:
    # A hybrid host's unified hierarchy (this project's CI machine): no controller at all.
    scope = systemd_scope(cgroupfs, offered=())
    driver = user_driver(cgroupfs)
    driver.start()
    assert driver.enforceable == frozenset() and driver.freezer
    assert cgroupfs.procs(scope) == [] and cgroupfs.enabled(scope) == set()
    agent = driver.create("a1", Limits(memory=MiB))
    assert agent.enforced == {"memory": False}
    agent.freeze()
    assert (agent.leaves[0] / "cgroup.freeze").read_text() == "1"
    assert agent.remove()
    driver.stop()
    assert under(scope) == [] and sorted(cgroupfs.procs(scope)) == sorted(PROCS)


def test_an_undelegated_cgroup_is_left_alone_and_says_why(cgroupfs: FakeCgroupfs) -> None:
    # A login session's scope: the user's processes, but root's directory.
    scope = systemd_scope(cgroupfs, delegated=False)
    driver = open_driver(layout_in(cgroupfs), instance="1-1", uid=USER)
    assert isinstance(driver, NoDriver)
    mode = stat.S_IMODE(scope.stat().st_mode)
    assert driver.reason == (f"uid {USER} may not create cgroups in {cgroupfs.root / TOP}, and its own cgroup "
                             f"{scope} is not delegated to uid {USER} (owned by uid {os.geteuid()}, mode {mode:04o})")
    # Half a delegation (the directory, not its cgroup.subtree_control) is none either.
    cgroupfs.delegate(scope)
    (scope / "cgroup.subtree_control").chmod(0o644)
    assert find_delegation(layout_in(cgroupfs), USER).root is None
    assert sorted(cgroupfs.procs(scope)) == sorted(PROCS) and under(scope) == []


def test_a_cgroup_an_agentos_kernel_made_for_an_agent_is_not_a_delegation(cgroupfs: FakeCgroupfs) -> None:
    scope = systemd_scope(cgroupfs)
    outer = user_driver(cgroupfs)
    outer.start()
    agent = outer.create("a1", Limits())
    cgroupfs.delegate(agent.leaves[0])
    # An agent running `agentos kernel`: rearranging its leaf would hide its processes from `outer`.
    inner = open_driver(layout_in(cgroupfs, f"{SCOPE}/{TOP}/1-1/a1/self"), instance="2-2", uid=USER)
    assert isinstance(inner, NoDriver)
    assert inner.reason.endswith(f"its own cgroup {agent.leaves[0]} is an agent's, made by an agentos kernel")
    assert agent.remove()
    outer.stop()
    assert under(scope) == []


def test_root_and_a_user_given_agentos_keep_the_hierarchys_root(cgroupfs: FakeCgroupfs) -> None:
    systemd_scope(cgroupfs)
    assert user_driver(cgroupfs, uid=0).roots == [cgroupfs.root]
    cgroupfs.mkdir(cgroupfs.root / TOP)
    cgroupfs.delegate(cgroupfs.root / TOP)
    driver = user_driver(cgroupfs)
    assert driver.roots == [cgroupfs.root] and not driver.delegated


def test_a_second_kernel_of_the_scope_shares_its_tree_and_cleans_a_dead_ones(cgroupfs: FakeCgroupfs) -> None:
    scope = systemd_scope(cgroupfs)
    dead = open_driver(layout_in(cgroupfs), instance=dead_instance(), uid=USER)
    dead.start()
    dead.create("lost", Limits(pids=4))
    # killed -9: its leaf and tree stay. The next kernel starts from a shell now in the leaf.
    later = open_driver(layout_in(cgroupfs, f"{SCOPE}/{KERNEL_LEAF}"), instance="1-1", uid=USER)
    assert isinstance(later, V2Driver) and later.roots == [scope]
    stale = later.start()
    assert [cgroup.agent_id for cgroup in stale] == ["lost"]
    assert remove_stale_now(later, stale)
    assert under(scope / TOP) == ["1-1"]
    later.stop()
    assert under(scope) == []


def test_another_cgroup_in_the_scope_keeps_the_leaf(cgroupfs: FakeCgroupfs) -> None:
    scope = systemd_scope(cgroupfs)
    first, second = user_driver(cgroupfs), open_driver(layout_in(cgroupfs, f"{SCOPE}/{KERNEL_LEAF}"),
                                                        instance="2-2", uid=USER)
    first.start()
    second.start()
    first.stop()
    # The second kernel's agents still need the controllers and the leaf arrangement.
    assert cgroupfs.enabled(scope) == set(ALL) and cgroupfs.procs(scope) == []
    assert under(scope) == sorted([KERNEL_LEAF, TOP, f"{TOP}/2-2"])
    second.stop()
    assert under(scope) == [] and sorted(cgroupfs.procs(scope)) == sorted(PROCS)


@pytest.mark.parametrize("module, name", [(base, "write"), (v2_module, "write"), (base, "mkdir")],
                         ids=["move", "subtree_control", "mkdir"])
def test_every_failure_of_start_leaves_the_scope_as_systemd_made_it(cgroupfs: FakeCgroupfs,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   module: object, name: str) -> None:
    scope = systemd_scope(cgroupfs)
    with monkeypatch.context() as patch:
        calls = fail_at(patch, module, name, None)
        probe = user_driver(cgroupfs)
        probe.start()
        in_start = calls[0]
        probe.stop()
    assert in_start >= 1
    for at in range(1, in_start + 1):
        with monkeypatch.context() as patch:
            fail_at(patch, module, name, at)
            with pytest.raises(OverflowError):
                user_driver(cgroupfs).start()
        assert under(scope) == [], f"call {at} of {name}"
        assert sorted(cgroupfs.procs(scope)) == sorted(PROCS), f"call {at} of {name}"
        assert cgroupfs.enabled(scope) == set(), f"call {at} of {name}"


def test_a_process_that_cannot_be_moved_fails_the_start_with_its_pid(cgroupfs: FakeCgroupfs,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scope = systemd_scope(cgroupfs)
    real = cgroupfs.write

    def refuse_1002(path: Path, value: str) -> None:
        # Another uid's process in the scope: the kernel refuses the move (EACCES) ...
        if path.name == "cgroup.procs" and value == "1002" and path.parent.name == KERNEL_LEAF:
            raise PermissionError(13, "Permission denied")
        real(path, value)

    monkeypatch.setattr(base, "write", refuse_1002)
    with pytest.raises(CgroupError, match=f"cannot move process 1002 from the delegated cgroup {scope}"):
        user_driver(cgroupfs).start()
    # ... and what had moved is back.
    assert under(scope) == [] and sorted(cgroupfs.procs(scope)) == sorted(PROCS)
