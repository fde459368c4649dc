"""The view's one root tmpfs (docs/sandboxes.md, "Superblocks and memory cgroups per sandbox"):
/dev, the root and masks stay read-only whatever the agent tries, /tmp and /dev/shm together
hold at most limits.tmp (itself at most the memory limit), no sandbox sees another's, and an
agent cannot leave its memory cgroup."""
from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

from .conftest import HostileKernel

#: A default mask (DEFAULT_MASKS) that holds no bind: the root's empty /proc directory shows there.
MASK = "/etc/ssl/private"


def _attack(hostile: HostileKernel, marker: str, *, hold: bool = False, cap_mib: int = 16,
            **limits: str) -> dict[str, Any]:
    task = {"mask": MASK, "cap_mib": cap_mib, "marker": marker, "hold": hold}
    return hostile.spawn("view_layout_attack", task, name=f"view-{marker}",
                         limits={"memory": "256Mi", "tmp": "16Mi", **limits})


@pytest.fixture(scope="module")
def layout(hostile: HostileKernel) -> dict[str, Any]:
    """One agent holding its files in /tmp and /dev/shm while a second attacks: what it sees."""
    holder = _attack(hostile, "first", hold=True)
    try:
        hostile.wait_output(holder)
        report = hostile.verdict(_attack(hostile, "second"))
    finally:
        hostile.admin.kill(id=holder["id"])
        hostile.admin.wait(id=holder["id"], timeout=90)
    return report


@pytest.mark.parametrize("attempt, refused", [
    ("create in /dev", ("EROFS",)),
    ("mkdir in /dev", ("EROFS",)),
    ("symlink in /dev", ("EROFS",)),
    ("unlink /dev/null", ("EROFS", "EBUSY")),
    ("rename /dev/shm", ("EROFS", "EBUSY")),
    ("create in /", ("EROFS",)),
    ("create in a mask", ("EROFS", "EACCES")),
    # Across mounts of the one tmpfs, as across file systems.
    ("hard link /tmp into /dev/shm", ("EXDEV", "EPERM")),
])
def test_dev_the_root_and_masks_stay_read_only(layout: dict[str, Any], attempt: str, refused: tuple[str]) -> None:
    assert layout["outcomes"][attempt] in refused


@pytest.mark.parametrize("attempt", ["mknod a char device in /tmp", "mknod a char device in /dev/shm"])
def test_no_device_nodes_in_the_writable_directories(layout: dict[str, Any], attempt: str) -> None:
    assert layout["outcomes"][attempt] == "EPERM"


@pytest.mark.parametrize("attempt", [
    "remount / rw", "remount /dev rw", "remount the mask rw", "remount /tmp's tmpfs bigger",
    "mount_setattr / rw", "mount_setattr /dev rw", "mount a tmpfs on /dev", "fspick /tmp's tmpfs bigger",
    # In a user namespace of its own it would hold every capability: it may not make one.
    "userns then remount / rw",
])
def test_nothing_is_made_writable_or_bigger_again(layout: dict[str, Any], attempt: str) -> None:
    assert layout["outcomes"][attempt] == "EPERM"


def test_a_mask_shows_an_empty_directory(hostile: HostileKernel, layout: dict[str, Any]) -> None:
    # A rootless kernel that cannot read the directory does not mask it: it stays unreadable.
    assert layout["mask"] == [] or (hostile.mode == "unprivileged" and layout["mask"] == "EACCES")


def test_tmp_and_dev_shm_together_hold_limits_tmp(layout: dict[str, Any]) -> None:
    # 8 MiB in /dev/shm first: /tmp, which alone could hold 16, is refused past the other 8.
    assert layout["statfs_mib"] == 16
    assert layout["shm_mib"] == 8
    assert layout["refused"] == "ENOSPC"
    assert layout["tmp_mib"] + layout["shm_mib"] <= 16


def test_no_sandbox_sees_another_ones_tmp_or_dev_shm(layout: dict[str, Any]) -> None:
    assert layout["others"] == {"/tmp": [], "/dev/shm": []}


def test_an_agent_cannot_leave_its_memory_cgroup(layout: dict[str, Any]) -> None:
    # /sys/fs/cgroup is not in the view; were it, cgroup.procs is the kernel's.
    assert layout["outcomes"]["leave its memory cgroup"] in ("ENOENT", "EROFS", "EACCES", "EPERM")


def test_tmp_as_big_as_the_memory_limit_is_bounded_by_it(hostile: HostileKernel) -> None:
    bomb = _attack(hostile, "bomb", cap_mib=256, memory="48Mi", tmp="48Mi")
    ended = hostile.admin.wait(id=bomb["id"], timeout=90)
    reports = hostile.output(bomb)
    assert ended["status"] == "oom_killed" or reports[-1]["refused"] in ("ENOSPC", "ENOMEM")
    if reports:
        assert reports[-1]["tmp_mib"] + reports[-1]["shm_mib"] < 48
    assert hostile.alive()


def test_a_childs_pages_count_against_its_parents_limit(hostile: HostileKernel) -> None:
    """On cgroup v1 an agent's processes sit in its memory directory itself, its children's in
    directories below it: what a child takes still counts against its parent's limit."""
    parent = hostile.spawn("memory_parent", {"held_mib": 32, "limit": "96Mi", "hog": hostile.script("memory_hog")},
                           capabilities=["spawn"], limits={"memory": "96Mi"})
    try:
        child = hostile.wait_output(parent)[0]["child"]
        ended = hostile.admin.wait(id=child, timeout=90)
        taken = [line["mib"] for line in hostile.output({"id": child}) if line.get("mib")]
        parent_status = hostile.admin.list_agents(name=parent["name"])[0]["status"]
    finally:
        hostile.admin.kill(id=parent["id"])
        hostile.admin.wait(id=parent["id"], timeout=90)
    # Its own limit would let it take 80 MiB; its parent holds 32 of their 96 (and the biggest
    # process of the two, the child, is the one killed).
    assert (ended["status"], parent_status) == ("oom_killed", "running")
    assert 32 + max(taken) < 96
    assert hostile.alive()


def test_an_agent_born_in_a_spare_cgroup_is_under_its_limit_from_its_first_line(hostile: HostileKernel) -> None:
    """On cgroup v1 a top-level sandbox after the first is born in a spare cgroup made ahead
    without limits (processes/spares.py): its limits are written before it runs anything."""
    for _ in range(3):
        bomb = hostile.spawn("memory_hog", "4096", limits={"memory": "32Mi"})
        ended = hostile.admin.wait(id=bomb["id"], timeout=90)
        assert ended["status"] == "oom_killed"
        assert max(line["mib"] or 0 for line in hostile.output(bomb)) < 32


@pytest.mark.parametrize("shown", ["/dev/shm", "/dev"])
def test_a_read_only_bind_under_dev_never_makes_the_hosts_dev_shm_writable(hostile: HostileKernel,
                                                                            shown: str) -> None:
    """A view with a bind at or under /dev keeps a tmpfs /dev over it: the writable /dev/shm is
    its own, never the host's shown read-only (the root tmpfs's /dev/shm, made writable once
    the view is sealed, once lay under such a bind)."""
    name = f"agentos-sec-shm-{os.getpid()}-{len(shown)}"
    agent = hostile.admin.spawn(f"shm-{len(shown)}", command=["sh", "-c", f"echo x > /dev/shm/{name}"],
                                readonly_paths=[shown])
    try:
        assert hostile.admin.wait(id=agent["id"], timeout=90)["status"] == "exited"
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{name}")
