"""Named volumes under attack, with the kernel as root (a disk quota: an ext4 image) and
unprivileged (no quota: refused, or a plain directory with allow_degraded, and said so): an
agent of project ``red`` holding volumes ``mine`` and ``ro`` reaches no other volume (project
``blue``'s, one of its own project it was not given, by a name that climbs out), mounts none
over /proc, /dev or the kernel's socket or state, and never gets one wider than it has
(writable where it is read-only, a bigger quota, in another project, unsandboxed); it cannot
remove one, nor see another project's or uid's."""
from __future__ import annotations

import os
from typing import Any

import pytest

from agentos import SyscallError

from .conftest import HostileKernel

SIZE = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def attack(hostile: HostileKernel) -> dict[str, Any]:
    degraded = hostile.mode == "unprivileged"
    secret = [{"name": "secret", "path": "/secret", "size": SIZE}]
    hostile.attack("victim", "blue's", "0", name="owner", project="blue", volumes=secret, allow_degraded=degraded)
    hostile.attack("victim", "red's", "0", name="other-owner", project="red", allow_degraded=degraded,
                   volumes=[{"name": "other", "path": "/other", "size": SIZE}])
    held = [{"name": "mine", "path": "/mine", "size": SIZE},
            {"name": "ro", "path": "/ro", "size": SIZE, "read_only": True}]
    task = {"victim": "blue", "socket_dir": str(hostile.process.socket_path.parent),
            "state_dir": str(hostile.process.state_dir),
            "child": {"script": hostile.script("victim"), "args": ["child"], "allow_degraded": degraded}}
    return hostile.attack("volume_attack", task, name="volume-attacker", project="red", volumes=held,
                          capabilities=["spawn", "kill"], allow_degraded=degraded)


def test_an_agent_reaches_no_volume_but_its_own(hostile: HostileKernel, attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    assert outcomes["mount the other project's volume"] == "permission_denied volumes[0].name"
    assert outcomes["mount a volume of its project it was not given"] == "permission_denied volumes[0].name"
    assert outcomes["a name that climbs out"] == "invalid_argument volumes[0].name"
    assert outcomes["inspect the other project's volume"] == "not_found"
    assert attack["seen"] == ["mine", "ro"]
    assert outcomes["another uid's volumes"] == "permission_denied uid"
    assert outcomes["remove its own volume"] == "permission_denied action"
    assert {v["project"] for v in hostile.admin.list_volumes() if v["name"] == "secret"} == {"blue"}
    assert hostile.alive()


def test_no_volume_goes_over_the_system_or_the_kernel(hostile: HostileKernel, attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    for what in ("mount over /proc", "mount over /dev/shm", "a path that climbs into /proc",
                 "mount over the kernel's socket dir", "mount over the kernel's state dir"):
        assert outcomes[what] == "invalid_argument volumes[0].path", what


def test_a_child_never_gets_a_volume_wider_than_its_spawners(hostile: HostileKernel,
                                                             attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    assert outcomes["its read-only volume writable"] == "permission_denied volumes[0].read_only"
    assert outcomes["a bigger quota"] == "permission_denied volumes[0].size"
    assert outcomes["into the other project"] == "permission_denied project"
    assert outcomes["unsandboxed"] == "permission_denied sandboxed"
    assert outcomes["its own volume, as given"] == "ok"
    assert outcomes["its read-only volume, read-only"] == "ok"
    assert attack["writes"] == {"/mine": "ok", "/ro": "EROFS"}


def test_the_quota_is_a_file_system_or_said_to_be_missing(hostile: HostileKernel, attack: dict[str, Any]) -> None:
    volume = [{"name": "quota", "path": "/q", "size": SIZE}]
    if hostile.mode == "unprivileged":
        with pytest.raises(SyscallError) as refused:
            hostile.spawn("victim", "x", name="no-disk", project="red", volumes=volume)
        assert refused.value.code.value == "unavailable"
        assert "root" in refused.value.message and "allow_degraded" in refused.value.message
        assert refused.value.details["field"] == "volumes[0]"
        info = hostile.spawn("victim", "x", name="plain", project="red", volumes=volume, allow_degraded=True)
        assert info["isolation"]["volumes"][0]["kind"] == "directory"
        assert any(d.startswith("volumes.quota: a plain directory without a disk quota")
                   for d in info["isolation"]["degraded"])
    else:
        info = hostile.spawn("victim", "x", name="quota", project="red", volumes=volume)
        assert info["isolation"]["volumes"] == [{"name": "quota", "path": "/q", "size": SIZE, "kind": "disk",
                                                 "read_only": False}]
        assert info["isolation"]["degraded"] == []
    hostile.admin.kill(id=info["id"], grace=0)
    assert os.path.isdir(hostile.process.state_dir / "volumes")
