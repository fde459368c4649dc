"""A workspace's quota holds from inside the agent, against a root kernel (its own file system)
and an unprivileged one (no disk quota: refused, or a tmpfs of that size with allow_degraded),
and no child gets more room than its parent has."""
from __future__ import annotations

from typing import Any

import pytest

from agentos import SyscallError

from .conftest import HostileKernel

SIZE = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def attack(hostile: HostileKernel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attacker's SPAWN answer and its report. An unprivileged kernel has no disk quota to
    give, so there the attacker runs degraded (a tmpfs workspace)."""
    degraded = hostile.mode == "unprivileged"
    child = {"script": hostile.script("victim"), "args": ["x"], "allow_degraded": degraded}
    children = [{**child, "name": "too-big", "workspace": {"size": "64Mi"}},
                {**child, "name": "first", "workspace": {"size": "20Mi"}},
                {**child, "name": "second", "workspace": {"size": "20Mi"}}]
    info = hostile.spawn("workspace_attack", {"children": children, "cap_mib": 256}, capabilities=["spawn", "kill"],
                         workspace={"size": SIZE}, allow_degraded=degraded)
    return info, hostile.verdict(info)


def test_the_workspace_quota_holds_from_inside(hostile: HostileKernel,
                                               attack: tuple[dict[str, Any], dict[str, Any]]) -> None:
    info, report = attack
    if hostile.mode == "unprivileged":
        with pytest.raises(SyscallError) as refused:
            hostile.spawn("victim", "x", name="no-disk", workspace={"size": SIZE})
        assert refused.value.code.value == "unavailable"
        assert "root" in refused.value.message and "allow_degraded" in refused.value.message
        assert info["isolation"]["workspace"]["kind"] == "tmpfs"
        assert any(d.startswith("workspace: a tmpfs") for d in info["isolation"]["degraded"])
    else:
        assert info["isolation"]["workspace"]["kind"] == "disk"
        assert info["isolation"]["degraded"] == []
    assert report["cwd"] == "/workspace" and report["owner"] == report["uid"]
    assert report["refused"] == "ENOSPC" and report["mib"] * (1 << 20) <= SIZE
    assert report["tmp_ok"]
    assert set(report["outcomes"].values()) == {"EPERM"}, report["outcomes"]
    assert hostile.alive()


def test_a_child_never_gets_more_workspace_than_its_parent(hostile: HostileKernel,
                                                           attack: tuple[dict[str, Any], dict[str, Any]]) -> None:
    too_big, first, second = attack[1]["children"]
    assert too_big == {"ok": False, "code": "permission_denied", "field": "workspace.size"}
    assert first == {"ok": True}
    if hostile.mode == "root":
        # Carved out of the parent's file system: 20Mi + 20Mi do not fit in 32Mi.
        assert second == {"ok": False, "code": "permission_denied", "field": "workspace.size"}
