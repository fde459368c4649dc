"""The zygote's embryo waits in a cgroup made ahead (processes/spares.py): a top-level sandbox is
born in it, renamed as its own and under its limits; a nested one gets a cgroup of its own as
before; no two sandboxes share a namespace; and nothing is left when the kernel stops."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agentos.cgroups import detect, open_driver
from agentos.protocol.requests import DEFAULT_MEMORY
from agentos.testing.kernel import KernelProcess

from .conftest import agent, kernel_cgroup_dirs, pid_alive

LIMITS = {"memory": "96Mi", "pids": 24}
NAMESPACES = ("net", "ipc", "uts", "mnt", "pid", "cgroup")


def _procs(directory: Path) -> set[int]:
    """The pids in a cgroup directory and its leaves."""
    found: set[int] = set()
    for place in (directory, *(d for d in directory.iterdir() if d.is_dir())):
        procs = place / "cgroup.procs"
        if procs.exists():
            found.update(int(word) for word in procs.read_text().split())
    return found


def _spares(instance: Path) -> list[Path]:
    return sorted(d for d in instance.iterdir() if d.is_dir() and d.name.startswith("spare-"))


def _spare_with_embryo(instance: Path, timeout: float = 30) -> tuple[Path, int]:
    """The one spare cgroup, once its embryo is in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spares = _spares(instance)
        assert len(spares) <= 1, spares
        procs = _procs(spares[0]) if spares else set()
        if procs:
            assert len(procs) == 1, procs
            return spares[0], procs.pop()
        time.sleep(0.01)
    raise AssertionError(f"no spare cgroup with an embryo in {instance}")


def _instance(dirs: list[Path], controller: str = "memory") -> Path:
    """The kernel's instance directory in ``controller``'s hierarchy."""
    return next(d for d in dirs if controller in d.parts[-3].split(","))


def _namespaces(pid: int) -> dict[str, int]:
    return {name: os.stat(f"/proc/{pid}/ns/{name}").st_ino for name in NAMESPACES}


def test_a_sandbox_is_born_in_the_cgroup_made_ahead_for_its_embryo(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        client = kernel.client(timeout=60)
        dirs = kernel_cgroup_dirs(kernel.pid)
        first = client.spawn("first", command=["sleep", "86400"], sandboxed=True, limits=LIMITS)
        instance = _instance(dirs)
        if not open_driver(detect()).adopts:  # cgroup v2 renames nothing: no spare is made
            assert _spares(instance) == []
            return
        spare, embryo = _spare_with_embryo(instance)
        inode = spare.stat().st_ino
        second = client.spawn("second", command=["sleep", "86400"], sandboxed=True, limits=LIMITS)
        # The embryo became the agent, and its spare the agent's cgroup: renamed, not moved.
        assert second["pid"] == embryo
        assert not spare.exists()
        assert (instance / second["id"]).stat().st_ino == inode
        assert embryo in _procs(instance / second["id"])
        assert int((instance / second["id"] / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
        # The same isolation report as an agent whose cgroup was made at its SPAWN.
        assert second["isolation"] == first["isolation"]
        # Other limits, the next embryo's spare: its own limits, none of the last agent's.
        _, embryo = _spare_with_embryo(instance)
        third = client.spawn("third", command=["sleep", "86400"], sandboxed=True, limits={"pids": 12})
        assert third["pid"] == embryo
        assert (_instance(dirs, "pids") / third["id"] / "pids.max").read_text().strip() == "12"
        # No memory limit asked: SPAWN's default, not the last agent's 96Mi.
        assert int((instance / third["id"] / "memory.limit_in_bytes").read_text()) == DEFAULT_MEMORY
        _, next_embryo = _spare_with_embryo(instance)
        assert next_embryo not in (first["pid"], second["pid"], third["pid"])
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()
    assert not pid_alive(next_embryo)
    assert [str(d) for d in dirs if d.exists()] == []
    assert "agentos.guardian" not in kernel.log()


def test_a_nested_sandbox_gets_its_own_cgroup_and_its_embryos_spare_goes(tmp_path: Path) -> None:
    """A rename stays in its parent: the child of an agent is moved into a cgroup made inside its
    parent's, and the spare it leaves is removed (one spare at most, for the next embryo)."""
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        client = kernel.client(timeout=60)
        dirs = kernel_cgroup_dirs(kernel.pid)
        client.spawn("warm", command=["sleep", "86400"], sandboxed=True)
        instance = _instance(dirs)
        adopts = open_driver(detect()).adopts
        if adopts:
            _spare_with_embryo(instance)
        parent = client.spawn("parent", agent("spawner"), sandboxed=True, capabilities=["spawn"])
        client.wait(id=parent["id"], until="ready", timeout=60)
        [child] = client.list_agents(name="child-of-parent")
        assert child["pid"] in _procs(instance / parent["id"] / child["id"])
        if adopts:
            _, embryo = _spare_with_embryo(instance)
            assert embryo not in (parent["pid"], child["pid"])
        assert [d.name for d in _spares(instance)] == ([_spares(instance)[0].name] if adopts else [])
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()
    assert [str(d) for d in dirs if d.exists()] == []
    assert "agentos.guardian" not in kernel.log()


def test_no_two_sandboxes_share_a_namespace(tmp_path: Path) -> None:
    """Each sandbox, the first (forked at its SPAWN) and those born from embryos made ahead, has
    namespaces no other agent ever had, none of them the kernel's."""
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        client = kernel.client(timeout=60)
        seen = {name: {ino} for name, ino in _namespaces(kernel.pid).items()}
        for n in range(4):
            info = client.spawn(f"boxed{n}", command=["sleep", "86400"], sandboxed=True)
            for name, ino in _namespaces(info["pid"]).items():
                assert ino not in seen[name], f"sandbox {n} shares a {name} namespace"
                seen[name].add(ino)
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()


def test_sandboxes_spawned_at_once_each_get_their_own_cgroup_and_limits(tmp_path: Path) -> None:
    """Launches racing the spare's making and each other: every agent ends up in its own cgroup
    under its own limits, whether it adopted a spare or not, and no spare holds an agent."""
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        dirs = kernel_cgroup_dirs(kernel.pid)
        pids_instance = _instance(dirs, "pids")

        def spawn(n: int) -> dict[str, Any]:
            with kernel.client(timeout=120) as client:
                return client.spawn(f"racing{n}", command=["sleep", "86400"], sandboxed=True,
                                    limits={"pids": 10 + n})
        with ThreadPoolExecutor(6) as pool:
            agents = list(pool.map(spawn, range(18)))
        for info in agents:
            assert info["pid"] in _procs(pids_instance / info["id"])
            assert (pids_instance / info["id"] / "pids.max").read_text().strip() == str(10 + int(info["name"][6:]))
        held = {info["pid"] for info in agents}
        for spare in _spares(pids_instance):
            assert not _procs(spare) & held, "an agent is in a spare cgroup"
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()
    assert [str(d) for d in dirs if d.exists()] == []
