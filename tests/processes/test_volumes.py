"""SPAWN ``volumes``: a project's named volumes, with a real disk quota, that outlive agents and kernels.

A root kernel keeps each volume as an ext4 image under ``<state_dir>/volumes`` and mounts it
(once, however many agents use it) while agents use it. What one agent writes, a later agent
of the same project reads, across a kernel restart and a SIGKILLed kernel too; writing past the
size is ENOSPC inside the agent; another project, another uid, a child without its spawner's
volume, a read-only mount and a path over the system's or kernel's directories are refused; rm
and PURGE remove it. Leftovers are looked for as the workspace tests do: loop devices on the
images, mounts below the instance directories.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from agentos import AsyncClient, Client
from agentos.errors import InvalidArgument, PermissionDenied, SyscallError
from agentos.processes.request import HOST, SpawnRequest, outside_user
from agentos.processes.volumes import VolumeGrant
from agentos.processes.workspace import loop_backings, mounts_under
from agentos.protocol import Op
from agentos.protocol.requests import SpawnRequestWire, decode_request
from agentos.testing.kernel import KernelProcess
from tests.permissions.identities import NOBODY, configured_kernel, run_as

from .conftest import agent

SIZE = 8 << 20
PROBE = agent("volume_probe")


def data(name: str = "data", path: str = "/data", **options: Any) -> list[dict[str, Any]]:
    return [{"name": name, "path": path, **options}]


def leftovers(state_dir: Path) -> dict[str, list[str]]:
    """What a mounted volume leaves while mounted: loop devices on its image, mounts below the
    instance directories."""
    root = state_dir / "workspaces"
    return {"loops": sorted(b for b in loop_backings() if b.startswith(str(state_dir / "volumes"))),
            "mounts": [str(m) for m in mounts_under(root) if m.parent != root] if root.exists() else []}


def wait_unmounted(state_dir: Path) -> None:
    """Until no volume is mounted (an ended agent's volume is unmounted in the background; the
    limit only bounds a broken run)."""
    deadline = time.monotonic() + 60
    while any((left := leftovers(state_dir)).values()):
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.05)


def probe(client: Client, name: str, path: str, action: str, volumes: list[dict[str, Any]],
          **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run volume_probe to its end: its SPAWN answer and its report."""
    info = client.spawn(name, PROBE, args=[path, action], volumes=volumes, **options)
    ended = client.wait(id=info["id"], timeout=120)
    output = client.logs(id=info["id"])
    lines = [x for x in output.splitlines() if x.startswith("VOLUME ")]
    assert lines, f"{name} ({ended['status']}) reported nothing:\n{output}"
    return info, json.loads(lines[0].removeprefix("VOLUME "))


def staying(client: Client, name: str, path: str, action: str, volumes: list[dict[str, Any]],
            **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start volume_probe with ``--stay``: its SPAWN answer and its report, while it runs."""
    info = client.spawn(name, PROBE, args=[path, action, "--stay"], volumes=volumes, **options)
    deadline = time.monotonic() + 120
    while not (lines := [x for x in client.logs(id=info["id"]).splitlines() if x.startswith("VOLUME ")]):
        assert time.monotonic() < deadline, client.logs(id=info["id"])
        time.sleep(0.05)
    return info, json.loads(lines[0].removeprefix("VOLUME "))


def image(state_dir: Path, project: str, name: str = "data", uid: int = 0) -> Path:
    return state_dir / "volumes" / str(uid) / project / f"{name}.img"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a disk quota is a mounted image")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    need_root()
    k = KernelProcess(tmp_path_factory.mktemp("volumes") / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()
        assert leftovers(k.state_dir) == {"loops": [], "mounts": []}


def test_what_one_agent_writes_a_later_agent_of_the_project_reads(kernel: KernelProcess) -> None:
    client = kernel.client()
    info, wrote = probe(client, "writer", "/data", "write:from the writer", data(size="8Mi"), project="alpha")
    assert info["isolation"]["volumes"] == [{"name": "data", "path": "/data", "size": SIZE, "kind": "disk",
                                             "read_only": False}]
    assert info["isolation"]["degraded"] == []
    assert wrote["write"] == "ok" and wrote["cwd"] == "/"
    assert wrote["owner"] == wrote["uid"] != 0  # idmapped: the agent's own, never root's
    assert SIZE * 0.7 < wrote["total"] <= SIZE
    wait_unmounted(kernel.state_dir)  # the last user's end unmounts it; the data stays
    # At /workspace it is the cwd; read-only, writes are refused.
    info, read = probe(client, "reader", "/workspace", "read", data(path="/workspace", read_only=True),
                       project="alpha")
    assert read["read"] == "from the writer" and read["write"] == "EROFS" and read["cwd"] == "/workspace"
    assert info["isolation"]["volumes"][0]["read_only"] is True
    [listed] = client.list_volumes("alpha")
    assert listed["name"] == "data" and listed["uid"] == 0 and listed["size"] == SIZE
    assert listed["kind"] == "disk" and 0 < listed["allocated"] <= SIZE
    held = image(kernel.state_dir, "alpha").stat()
    assert held.st_mode & 0o777 == 0o600 and held.st_uid == 0 and held.st_size == SIZE
    wait_unmounted(kernel.state_dir)


def test_another_project_has_a_volume_of_its_own_by_that_name(kernel: KernelProcess) -> None:
    client = kernel.client()
    probe(client, "mine", "/data", "write:beta's", data(size="8Mi"), project="beta")
    _, other = probe(client, "theirs", "/data", "read", data(size="8Mi"), project="gamma")
    assert other["read"] == "ENOENT" and other["write"] == "ok"
    _, again = probe(client, "mine-again", "/data", "read", data(), project="beta")
    assert again["read"] == "beta's"
    assert {v["project"] for v in client.list_volumes() if v["name"] == "data"} >= {"beta", "gamma"}
    with pytest.raises(SyscallError) as ambiguous:
        client.inspect_volume("data")
    assert ambiguous.value.code.value == "invalid_argument" and ambiguous.value.details["field"] == "project"
    wait_unmounted(kernel.state_dir)


def test_writing_past_the_size_is_enospc_inside_the_agent(kernel: KernelProcess) -> None:
    client = kernel.client()
    _, filled = probe(client, "filler", "/data", "fill:64", data(size="8Mi"), project="quota")
    assert filled["refused"] == "ENOSPC" and 4 < filled["mib"] and filled["mib"] * (1 << 20) <= SIZE
    held = image(kernel.state_dir, "quota").stat()
    assert held.st_size == SIZE and held.st_blocks * 512 <= SIZE
    wait_unmounted(kernel.state_dir)


def test_agents_using_a_volume_at_once_share_one_mount(kernel: KernelProcess) -> None:
    client = kernel.client()
    first, wrote = staying(client, "first", "/data", "write:shared", data(size="8Mi"), project="pair")
    second, read = staying(client, "second", "/shared", "read", data(path="/shared"), project="pair")
    try:
        assert wrote["write"] == "ok" and read["read"] == "shared"
        # One loop device and one mount for both: an ext4 file system is never mounted twice.
        backing = os.path.realpath(image(kernel.state_dir, "pair"))
        assert sorted(loop_backings()).count(backing) == 1
        assert [m.name for m in mounts_under(kernel.state_dir / "workspaces")
                if m.name.startswith("volume.")] == ["volume.0.pair.data"]
        assert sorted(client.inspect_volume("data", project="pair")["in_use"]) == sorted([first["id"], second["id"]])
        with pytest.raises(SyscallError) as busy:
            client.remove_volume("data", project="pair")
        assert busy.value.code.value == "busy"
        with pytest.raises(SyscallError) as purging:
            client.purge("pair")
        assert purging.value.code.value == "busy"
    finally:
        client.kill(id=first["id"], grace=0)
        client.kill(id=second["id"], grace=0)
    wait_unmounted(kernel.state_dir)
    assert client.inspect_volume("data", project="pair")["in_use"] == []
    assert client.remove_volume("data", project="pair")["removed"][0]["name"] == "data"
    assert not image(kernel.state_dir, "pair").exists()
    assert not (kernel.state_dir / "volumes" / "0" / "pair").exists()


def test_a_size_that_is_not_the_volumes_own_is_refused(kernel: KernelProcess) -> None:
    client = kernel.client()
    probe(client, "sized", "/data", "look", data(size="8Mi"), project="sizes")
    with pytest.raises(SyscallError) as refused:
        client.spawn("resized", PROBE, args=["/data", "look"], volumes=data(size="16Mi"), project="sizes")
    assert refused.value.code.value == "invalid_argument"
    assert refused.value.details["field"] == "volumes[0].size"
    assert image(kernel.state_dir, "sizes").stat().st_size == SIZE
    wait_unmounted(kernel.state_dir)


@pytest.mark.parametrize("where, field", [
    ("script", "volumes[0].path"),      # the script's directory
    ("state", "volumes[0].path"),       # the kernel's state dir (masked in every view)
    ("socket", "volumes[0].path"),      # the kernel's socket
    ("python", "volumes[0].path"),      # this Python installation
])
def test_a_volume_never_covers_another_path_of_the_view(kernel: KernelProcess, where: str, field: str) -> None:
    path = {"script": os.path.dirname(PROBE), "state": str(kernel.state_dir),
            "socket": str(kernel.socket_path), "python": os.path.dirname(sys.executable)}[where]
    with pytest.raises(SyscallError) as refused:
        kernel.client().spawn("over", PROBE, args=["/data", "look"], volumes=data(path=path), project="paths")
    assert refused.value.code.value == "invalid_argument" and refused.value.details["field"] == field
    assert not (kernel.state_dir / "volumes" / "0" / "paths").exists()


def test_the_cli_lists_and_removes_volumes_and_down_volumes_removes_the_projects(kernel: KernelProcess) -> None:
    client = kernel.client()
    probe(client, "cli", "/data", "look", data(size="8Mi"), project="cli")
    probe(client, "cli-b", "/data", "look", data("other", size="8Mi"), project="cli")
    wait_unmounted(kernel.state_dir)

    def agentos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentos", *args, "--socket", str(kernel.socket_path)],
                              capture_output=True, text=True, timeout=120, check=False)

    listed = agentos("volume", "ls", "-p", "cli")
    assert listed.returncode == 0 and "data" in listed.stdout and "8Mi" in listed.stdout, listed
    removed = agentos("volume", "rm", "other", "-p", "cli")
    assert removed.returncode == 0 and "removed volume other of cli" in removed.stdout, removed
    assert json.loads(agentos("volume", "inspect", "data", "-p", "cli").stdout)["size"] == SIZE
    gone = agentos("volume", "inspect", "other", "-p", "cli")
    assert gone.returncode == 1 and "no volume" in gone.stderr
    down = agentos("down", "--volumes", "-p", "cli")
    assert down.returncode == 0 and "1 volumes" in down.stdout, down
    assert client.list_volumes("cli") == []
    assert not (kernel.state_dir / "volumes" / "0" / "cli").exists()


def test_a_sandboxs_session_outlives_it_through_both_clients(kernel: KernelProcess) -> None:
    """A sandbox keeps a cell's files in a volume at /workspace (its cwd); the next sandbox,
    started by the other client, finds them; both clients list and remove the volume."""
    volume = data("notebook", "/workspace", size="8Mi")
    with kernel.client() as client, client.sandbox(volumes=volume) as sb:
        assert sb.exec("pwd").stdout == b"/workspace\n"
        assert sb.run_code("open('state.txt', 'w').write('kept')").error is None

    async def later() -> tuple[str | None, list[dict[str, Any]], dict[str, Any]]:
        async with await AsyncClient.connect(kernel.socket_path, timeout=60) as aclient:
            async with aclient.sandbox(volumes=data("notebook", "/workspace")) as sb:
                text = (await sb.run_code("open('state.txt').read()")).text
            await asyncio.to_thread(wait_unmounted, kernel.state_dir)
            listed = await aclient.list_volumes("")
            return text, listed, await aclient.remove_volume("notebook", project="")

    text, listed, removed = asyncio.run(later())
    assert text == "'kept'"
    assert [v["name"] for v in listed] == ["notebook"] and listed[0]["project"] is None
    assert [v["name"] for v in removed["removed"]] == ["notebook"]
    assert kernel.client().list_volumes("") == []


def test_a_volume_outlives_a_kernel_restart(tmp_path: Path) -> None:
    need_root()
    with KernelProcess(tmp_path / "k") as first:
        probe(first.client(), "before", "/data", "write:kept", data(size="8Mi"), project="restart")
    with KernelProcess(tmp_path / "k") as second:
        _, read = probe(second.client(), "after", "/data", "read", data(), project="restart")
        assert read["read"] == "kept"
        wait_unmounted(second.state_dir)


def test_a_killed_kernel_leaves_nothing_mounted_and_the_data_stays(tmp_path: Path) -> None:
    need_root()
    first = KernelProcess(tmp_path / "k").start()
    try:
        _, wrote = staying(first.client(), "holder", "/data", "write:survives", data(size="8Mi"), project="crash")
        assert wrote["write"] == "ok"
    finally:
        first.kill()  # a crash: nothing of the kernel's cleanup ran
    assert leftovers(first.state_dir)["mounts"]
    second = KernelProcess(tmp_path / "k").start()
    try:
        # The next kernel unmounts what the dead one left; its loop device then detaches itself,
        # and only then is the image mounted again.
        _, read = probe(second.client(), "finder", "/data", "read", data(), project="crash")
        assert read["read"] == "survives"
        wait_unmounted(second.state_dir)
    finally:
        second.stop_checked()
    assert leftovers(second.state_dir) == {"loops": [], "mounts": []}


def test_another_uid_never_reaches_a_volume_of_the_same_name(tmp_path: Path) -> None:
    """Volumes are the uid's: another local user admitted with ``spawn`` names its own, and may
    neither list, inspect nor remove root's."""
    need_root()
    sections = {"permissions": {"uids": {str(NOBODY): ["spawn", "kill"]}}}
    with configured_kernel(sections, world_reachable=True) as kernel:
        client = kernel.client()
        probe(client, "roots", "/data", "write:root's", data(size="8Mi"), project="shared")

        def as_nobody(c: Client) -> Any:
            info = c.spawn("nobodys", PROBE, args=["/data", "read"], volumes=data(size="8Mi"), project="shared")
            c.wait(id=info["id"], timeout=120)
            [line] = [x for x in c.logs(id=info["id"]).splitlines() if x.startswith("VOLUME ")]
            return {"report": json.loads(line.removeprefix("VOLUME ")), "listed": c.list_volumes()}

        seen = run_as(NOBODY, kernel.socket_path, as_nobody)["ok"]
        assert seen["report"]["read"] == "ENOENT" and seen["report"]["write"] == "ok"
        assert [(v["uid"], v["name"]) for v in seen["listed"]] == [(NOBODY, "data")]
        for attempt in (lambda c: c.inspect_volume("data", project="shared", uid=0),
                        lambda c: c.remove_volume("data", project="shared", uid=0),
                        lambda c: c.list_volumes(uid=0)):
            refused = run_as(NOBODY, kernel.socket_path, attempt)
            assert refused["code"] == "permission_denied" and "uid" in refused["message"], refused
        _, mine = probe(client, "roots-again", "/data", "read", data(), project="shared")
        assert mine["read"] == "root's"
        assert {v["uid"] for v in client.list_volumes()} == {0, NOBODY}
        wait_unmounted(kernel.state_dir)


# -- the request, without a kernel ------------------------------------------------------------

def _parse(payload: dict[str, Any], parent: Any = HOST) -> SpawnRequest:
    wire = cast(SpawnRequestWire, decode_request(Op.SPAWN, json.dumps({"script": PROBE, **payload}).encode()))
    return SpawnRequest.parse(wire, parent)


@pytest.mark.parametrize("volumes, field", [
    ("data", "volumes"),
    ([{"name": "data"}], "volumes[0].path"),
    ([{"path": "/data"}], "volumes[0].name"),
    (data("../other"), "volumes[0].name"),
    (data("a/b"), "volumes[0].name"),
    (data(".hidden"), "volumes[0].name"),
    (data(""), "volumes[0].name"),
    (data(path="data"), "volumes[0].path"),
    (data(path="/"), "volumes[0].path"),
    (data(path="/a/../proc"), "volumes[0].path"),
    (data(path="/data/"), "volumes[0].path"),
    (data(path="//data"), "volumes[0].path"),
    (data(path="/proc/self"), "volumes[0].path"),
    (data(path="/dev"), "volumes[0].path"),
    (data(path="/tmp/x"), "volumes[0].path"),
    (data(path="/usr/lib/data"), "volumes[0].path"),
    (data(path="/etc"), "volumes[0].path"),
    (data(size="lots"), "volumes[0].size"),
    (data(size=1.5), "volumes[0].size"),
    (data(size=0), "volumes[0].size"),
    (data(size="512Ki"), "volumes[0].size"),
    (data(read_only="yes"), "volumes[0].read_only"),
    (data(mode="rw"), "volumes[0].mode"),
    ([*data(), *data(path="/other")], "volumes[1].name"),
    ([*data(), *data("b", path="/data/b")], "volumes[1].path"),
    ([data(f"v{i}", path=f"/v{i}")[0] for i in range(33)], "volumes"),
])
def test_malformed_volumes_are_invalid_arguments(volumes: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _parse({"volumes": volumes})
    assert refused.value.details["field"] == field


def test_a_volume_needs_the_sandbox_and_leaves_the_workspace_alone() -> None:
    with pytest.raises(InvalidArgument) as unsandboxed:
        _parse({"sandboxed": False, "volumes": data()})
    assert unsandboxed.value.details["field"] == "volumes"
    with pytest.raises(InvalidArgument) as clash:
        _parse({"workspace": {"size": "8Mi"}, "volumes": data(path="/workspace")})
    assert clash.value.details["field"] == "volumes[0].path"
    assert [v.path for v in _parse({"volumes": data(path="/workspace")}).volumes] == ["/workspace"]


def test_a_child_mounts_only_what_its_spawner_has_and_never_wider() -> None:
    held = (VolumeGrant(1000, "team", "data", SIZE, True), VolumeGrant(1000, "team", "ro", SIZE, False))
    parent = replace(outside_user(1000), volumes=held)
    for volumes, field in ((data("elsewhere"), "volumes[0].name"),
                           (data("ro"), "volumes[0].read_only"),
                           (data(size=SIZE + 1), "volumes[0].size")):
        with pytest.raises(PermissionDenied) as refused:
            _parse({"volumes": volumes}, parent)
        assert refused.value.details["field"] == field
    request = _parse({"volumes": [*data(), *data("ro", path="/ro", read_only=True)]}, parent)
    assert request.volume_owner == 1000  # the spawner's volumes, whoever connects
    assert [(v.name, v.read_only) for v in request.volumes] == [("data", False), ("ro", True)]
    # An agent without volumes gives its children none; an outside client's own are its uid's.
    with pytest.raises(PermissionDenied):
        _parse({"volumes": data()}, replace(parent, volumes=()))
    assert _parse({"volumes": data()}).volume_owner is None
    # What the started agent holds is what it mounted.
    assert request.confinement((), None, held[:1]).volumes == held[:1]
