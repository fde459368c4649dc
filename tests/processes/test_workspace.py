"""SPAWN ``workspace``: a private /workspace with a real disk quota, and nothing left behind.

A root kernel backs each workspace with an ext4 image on a loop device under its state
dir. The quota is tried from inside the agent (ENOSPC past the size, /tmp unaffected) and
seen from the host (the image never holds more than the size). Every way an agent's
workspace can end is checked for leftovers: loop devices (``/sys/block/loop*/loop/backing_file``),
mounts (``/proc/self/mountinfo``) and files under the state dir: a normal end, a failed
SPAWN, and a SIGKILLed kernel followed by a restart.
"""
from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from agentos.errors import InvalidArgument, PermissionDenied, SyscallError
from agentos.processes.request import HOST, Confinement, SpawnRequest, outside_user
from agentos.processes.workspace import loop_backings, mounts_under
from agentos.protocol import Op
from agentos.protocol.requests import SpawnRequestWire, decode_request
from agentos.testing.kernel import KernelProcess

from .conftest import agent

SIZE = 16 * 1024 * 1024


def leftovers(state_dir: Path) -> dict[str, list[str]]:
    """Everything of a workspace still there: loop devices on images in ``state_dir``, mounts
    and files below the instance directories (which a running kernel keeps, empty)."""
    root = state_dir / "workspaces"
    return {
        "loops": [b for b in loop_backings() if b.startswith(str(state_dir))],
        "mounts": [str(m) for m in mounts_under(root) if m.parent != root],
        "files": [str(p) for p in root.rglob("*") if p.parent != root] if root.exists() else [],
    }


def wait_clean(state_dir: Path) -> None:
    """Until nothing of any workspace is left (removal runs in the background after an end;
    the limit only bounds a broken run)."""
    deadline = time.monotonic() + 60
    while any((left := leftovers(state_dir)).values()):
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.05)


def report_of(client: Any, agent_id: str) -> dict[str, Any]:
    """The ``WORKSPACE`` line of a running workspace_fill agent, once it has written it."""
    deadline = time.monotonic() + 120
    while True:
        lines = [x for x in client.logs(id=agent_id).splitlines() if x.startswith("WORKSPACE ")]
        if lines:
            result: dict[str, Any] = json.loads(lines[0].removeprefix("WORKSPACE "))
            return result
        status = client.list_agents(status=None)
        mine = [a for a in status if a["id"] == agent_id]
        assert mine and mine[0]["status"] == "running", client.logs(id=agent_id)
        assert time.monotonic() < deadline, client.logs(id=agent_id)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a disk quota is a mounted image")
    k = KernelProcess(tmp_path_factory.mktemp("workspace")).start()
    try:
        yield k
    finally:
        k.stop_checked()
        assert leftovers(k.state_dir) == {"loops": [], "mounts": [], "files": []}
        assert not mounts_under(k.state_dir / "workspaces")


def test_the_quota_holds_inside_and_the_image_is_bounded_outside(kernel: KernelProcess) -> None:
    client = kernel.client()
    info = client.spawn("filler", agent("workspace_fill"), args=["64"], workspace="16Mi")
    try:
        assert info["isolation"]["workspace"] == {"path": "/workspace", "size": SIZE, "kind": "disk"}
        assert info["isolation"]["degraded"] == []
        report = report_of(client, info["id"])
        assert report["cwd"] == "/workspace"  # the default cwd
        assert report["owner"] == report["uid"] != 0  # idmapped: the agent's own, never root's
        assert report["refused"] == "ENOSPC"
        assert report["total"] <= SIZE and report["mib"] * (1 << 20) <= SIZE
        assert report["mib"] > 8  # the quota, not some other failure, stopped it
        assert report["tmp_ok"]  # its other writes are not affected
        [image] = (kernel.state_dir / "workspaces").glob(f"*/{info['id']}.img")
        held = image.stat()
        assert stat.S_IMODE(held.st_mode) == 0o600 and held.st_uid == 0
        assert held.st_size == SIZE and held.st_blocks * 512 <= SIZE
        assert str(image) in loop_backings()
        assert image.with_suffix("") in mounts_under(image.parent)
    finally:
        client.kill(id=info["id"], grace=0)
    wait_clean(kernel.state_dir)


def test_agents_without_a_workspace_have_none(kernel: KernelProcess, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    script = tmp_path / "look.py"
    script.write_text("import os\nprint('LOOK', os.getcwd(), os.path.exists('/workspace'), flush=True)\n")
    script.chmod(0o644)
    client = kernel.client()
    info = client.spawn("no-workspace", str(script))
    assert "workspace" not in info["isolation"]
    client.wait(id=info["id"], timeout=60)
    assert "LOOK / False" in client.logs(id=info["id"])


def test_each_agent_gets_its_own_file_system(kernel: KernelProcess, tmp_path: Path) -> None:
    """Agents started one after another (the later ones from sandboxes forked ahead of time,
    before their workspace existed) each see their own file system, of their own size."""
    tmp_path.chmod(0o755)
    script = tmp_path / "mine.py"
    script.write_text("import os, sys, time\n"
                      "open('/workspace/owner', 'w').write(sys.argv[1])\n"
                      "info = os.statvfs('/workspace')\n"
                      "print('MINE', os.listdir('/workspace'), info.f_blocks * info.f_frsize, flush=True)\n"
                      "time.sleep(600)\n")
    script.chmod(0o644)
    client = kernel.client()
    sizes = ["8Mi", "12Mi", "16Mi", "20Mi"]
    started = []
    try:
        for i, size in enumerate(sizes):
            started.append(client.spawn(f"own-{i}", str(script), args=[str(i)], workspace={"size": size}))
        for i, info in enumerate(started):
            deadline = time.monotonic() + 120
            while not (lines := [x for x in client.logs(id=info["id"]).splitlines() if x.startswith("MINE ")]):
                assert time.monotonic() < deadline, client.logs(id=info["id"])
                time.sleep(0.05)
            files, total = lines[0].split(" ", 1)[1].rsplit(" ", 1)
            assert files == "['owner']"
            limit = int(sizes[i].removesuffix("Mi")) << 20
            assert limit * 0.8 < int(total) <= limit
    finally:
        for info in started:
            client.kill(id=info["id"], grace=0)
    wait_clean(kernel.state_dir)


def test_the_first_workspace_after_other_agents_is_its_own_file_system(tmp_path: Path) -> None:
    """Sandboxes forked ahead of time for earlier agents (before any workspace existed) never
    give a later agent an unbounded directory in place of its workspace."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a disk quota is a mounted image")
    with KernelProcess(tmp_path / "k") as k:
        client = k.client()
        for i in range(2):
            client.wait(id=client.spawn(f"before-{i}", command=["/bin/true"])["id"], timeout=60)
        info = client.spawn("first-workspace", agent("workspace_fill"), args=["64"], workspace="16Mi")
        try:
            report = report_of(client, info["id"])
            assert report["refused"] == "ENOSPC" and report["total"] <= SIZE
        finally:
            client.kill(id=info["id"], grace=0)
        wait_clean(k.state_dir)
    assert not mounts_under(k.state_dir / "workspaces")


def test_a_failed_spawn_leaves_nothing(kernel: KernelProcess) -> None:
    client = kernel.client()
    # Made, then refused by the sandbox: the kernel's state is masked in every view.
    with pytest.raises(SyscallError) as refused:
        client.spawn("fails-late", agent("sleeper"), workspace="8Mi",
                     readonly_paths=[str(kernel.state_dir / "logs")])
    assert refused.value.code.value == "unavailable"
    # Refused before anything is made.
    invalid: list[dict[str, Any]] = [{"sandboxed": False}, {"workspace": {"size": "512K"}}]
    for options in invalid:
        with pytest.raises(SyscallError) as bad:
            client.spawn("fails-early", agent("sleeper"), **{"workspace": "8Mi", **options})
        assert bad.value.code.value == "invalid_argument" and bad.value.details["field"].startswith("workspace")
    wait_clean(kernel.state_dir)
    assert not client.list_agents(status="running")


def test_children_get_no_more_than_their_parent_and_share_its_room(kernel: KernelProcess) -> None:
    """A child's workspace is at most its parent's and carved out of it: two children of 20Mi
    do not both fit in a 32Mi parent; a parent without a workspace gives its children none."""
    client = kernel.client()
    sleeper = agent("sleeper")
    payloads = [
        {"name": "too-big", "script": sleeper, "workspace": {"size": "64Mi"}},
        {"name": "first", "script": sleeper, "workspace": {"size": "20Mi"}},
        {"name": "second", "script": sleeper, "workspace": {"size": "20Mi"}},
        {"name": "small", "script": sleeper, "workspace": {"size": "4Mi"}},
    ]
    verdicts = _spawned_by_agent(client, payloads, workspace="32Mi")
    assert [v["ok"] for v in verdicts] == [False, True, False, True], verdicts
    for verdict in (verdicts[0], verdicts[2]):
        assert verdict["code"] == "permission_denied" and verdict["details"]["field"] == "workspace.size"
    assert "free" in verdicts[2]["message"]
    [without] = _spawned_by_agent(client, payloads[3:])
    assert without["code"] == "permission_denied" and without["details"]["field"] == "workspace"
    wait_clean(kernel.state_dir)


def _spawned_by_agent(client: Any, payloads: list[dict[str, Any]], **parent: Any) -> list[dict[str, Any]]:
    info = client.spawn("ws-parent", agent("spawn_attempts"), args=[json.dumps(payloads)],
                        capabilities=["spawn", "kill"], **parent)
    client.wait(id=info["id"], timeout=120)
    output = client.logs(id=info["id"])
    [line] = [x for x in output.splitlines() if x.startswith("VERDICTS ")]
    verdicts: list[dict[str, Any]] = json.loads(line.removeprefix("VERDICTS "))
    return verdicts


def test_a_killed_kernel_leaves_what_the_next_one_removes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a disk quota is a mounted image")
    first = KernelProcess(tmp_path / "k").start()
    try:
        info = first.client().spawn("orphan", agent("sleeper"), workspace="8Mi")
        assert info["isolation"]["workspace"]["kind"] == "disk"
    finally:
        first.kill()  # a crash: no cleanup ran
    left = leftovers(first.state_dir)
    assert left["mounts"] and left["files"]
    [dead] = [p for p in (first.state_dir / "workspaces").iterdir()]
    second = KernelProcess(tmp_path / "k").start()
    try:
        second.client().echo("up")
        # Its agents died with it; once their views are gone the loop device detaches too.
        wait_clean(second.state_dir)
        assert not dead.exists()
        assert not mounts_under(dead)
    finally:
        second.stop_checked()
    assert leftovers(second.state_dir) == {"loops": [], "mounts": [], "files": []}
    assert not mounts_under(second.state_dir / "workspaces")


# -- the request, without a kernel ------------------------------------------------------------

def _parse(payload: dict[str, Any], parent: Confinement = HOST) -> SpawnRequest:
    wire = cast(SpawnRequestWire, decode_request(Op.SPAWN, json.dumps(payload).encode()))
    return SpawnRequest.parse(wire, parent)


@pytest.mark.parametrize("workspace, field", [
    ("256Mi", "workspace"),
    ({}, "workspace.size"),
    ({"size": -1}, "workspace.size"),
    ({"size": "lots"}, "workspace.size"),
    ({"size": 1.5}, "workspace.size"),
    ({"size": "0"}, "workspace.size"),
    ({"size": "1023Ki"}, "workspace.size"),
    ({"size": "1Mi", "path": "/elsewhere"}, "workspace.path"),
])
def test_malformed_workspaces_are_invalid_arguments(workspace: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _parse({"script": agent("sleeper"), "workspace": workspace})
    assert refused.value.details["field"] == field


def test_a_workspace_needs_the_sandbox() -> None:
    with pytest.raises(InvalidArgument) as refused:
        _parse({"script": agent("sleeper"), "sandboxed": False, "workspace": {"size": "1Mi"}})
    assert refused.value.details["field"] == "workspace"


def test_sizes_and_what_a_child_may_ask() -> None:
    assert _parse({"script": agent("sleeper")}).workspace is None
    assert _parse({"script": agent("sleeper"), "workspace": {"size": "1Mi"}}).workspace == 1 << 20
    assert _parse({"script": agent("sleeper"), "workspace": None}).workspace is None
    parent = replace(outside_user(65534), workspace=32 << 20)
    assert _parse({"script": agent("sleeper"), "workspace": {"size": "32Mi"}}, parent).workspace == 32 << 20
    with pytest.raises(PermissionDenied) as wider:
        _parse({"script": agent("sleeper"), "workspace": {"size": (32 << 20) + 1}}, parent)
    assert wider.value.details["field"] == "workspace.size"
    with pytest.raises(PermissionDenied) as none:
        _parse({"script": agent("sleeper"), "workspace": {"size": "1Mi"}}, replace(parent, workspace=0))
    assert none.value.details["field"] == "workspace"
    # What an agent holds is its own workspace's size (0 without one).
    request = _parse({"script": agent("sleeper"), "workspace": {"size": "8Mi"}})
    assert request.confinement((), None).workspace == 8 << 20
    assert _parse({"script": agent("sleeper")}).confinement((), None).workspace == 0
