"""Without the agentos[ray] extra (or without ``--cluster``): a kernel imports no Ray, runs an agent
that asks for a node here and says so, and asking for a cluster stops the kernel at start with how
to install it. Configuration and SPAWN mistakes are named. These run in the default test run."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentos.cgroups import Limits
from agentos.cgroups.none import NoCgroup
from agentos.cluster.settings import ClusterSettings
from agentos.errors import InvalidArgument
from agentos.processes.agent import Agent
from agentos.processes.ledger import LEDGER_FILE, Ledger, _kill_leftover
from agentos.processes.logs import LogCapture
from agentos.processes.request import HOST
from agentos.testing.kernel import KernelProcess

from .conftest import agent

BLOCKED_KERNEL = Path(__file__).parent.parent / "observability" / "blocked_kernel.py"


def _blocked(tmp_path: Path) -> dict[str, str]:
    return {"BLOCKED_MODULES": "ray", "BLOCKED_IMPORTS_LOG": str(tmp_path / "attempts")}


def test_a_placed_agent_runs_here_on_a_kernel_without_a_cluster(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k", env=_blocked(tmp_path),
                           command=[sys.executable, str(BLOCKED_KERNEL), "kernel"]).start()
    try:
        with kernel.client() as client:
            assert "cluster" not in client.hello()["capabilities"]
            spawned = client.spawn("here", agent("sleeper"), placement={"labels": {"pool": "agents"}})
            assert spawned["node"] is None
            assert spawned["isolation"]["placement"].startswith("ignored: this kernel drives no cluster")
            client.wait("here", until="ready", timeout=60)
            client.kill("here", grace=5)
    finally:
        kernel.stop_checked()
    assert not (tmp_path / "attempts").exists(), (tmp_path / "attempts").read_text()


def test_asking_for_a_cluster_without_ray_stops_the_kernel(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BLOCKED_KERNEL), "kernel", "--socket", str(tmp_path / "s"),
                             "--state-dir", str(tmp_path / "state"), "--cluster", "127.0.0.1:6379"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, **_blocked(tmp_path)})
    assert result.returncode != 0
    assert "cluster needs Ray" in result.stderr and "pip install 'agentos[ray]'" in result.stderr
    assert (tmp_path / "attempts").read_text().splitlines()[0] == "ray"


def test_doctor_cluster_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BLOCKED_KERNEL), "doctor", "--cluster", "127.0.0.1:6379", "--json",
                             "--socket", str(tmp_path / "none")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **_blocked(tmp_path)})
    assert result.returncode == 1
    cluster = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "cluster"]
    assert [c["level"] for c in cluster] == ["fail"]
    assert "needs Ray" in cluster[0]["detail"] and "pip install 'agentos[ray]'" in cluster[0]["detail"]


def test_a_restarting_kernel_never_kills_a_local_process_that_has_a_placed_agents_pid(tmp_path: Path) -> None:
    # A process of this host that happens to have the number a node gave a placed agent.
    bystander = subprocess.Popen(["sleep", "120"])

    async def record() -> None:
        ledger = Ledger(tmp_path / LEDGER_FILE)
        ledger.open()
        placed = Agent(id="a1b2c3d4e5f6", name="far", argv=["far.py"], limits=Limits(), sandboxed=True, parent=None,
                       log=LogCapture(tmp_path / "far.log", 1024), cgroup=NoCgroup("a1b2c3d4e5f6", [], {}),
                       confinement=HOST, pid=bystander.pid, remote=object())
        ledger.spawned(placed)
        ledger.close()

    try:
        asyncio.run(record())
        # Its kernel died with the agent running: the next one reads the row back and kills what is left.
        [entry] = Ledger(tmp_path / LEDGER_FILE).open()
        assert entry.pid == bystander.pid and entry.pid_start is None
        _kill_leftover(entry)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize(("section", "key"), [
    ({}, "cluster.address"),
    ({"address": 7}, "cluster.address"),
    ({"address": "auto", "placement_timeout": "soon"}, "cluster.placement_timeout"),
    ({"address": "auto", "placement_timeout": [1]}, "cluster.placement_timeout"),
    ({"address": "auto", "nodes": 2}, "'nodes'"),
    ({"address": "auto", "hosts": "pod"}, "cluster.hosts"),
    ({"address": "auto", "hosts": ["node"]}, "cluster.hosts"),
])
def test_configuration_mistakes_name_their_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ClusterSettings.from_section(section)


def test_placement_values_are_checked_by_field(kernel: KernelProcess) -> None:
    with kernel.client() as client:
        cases: list[tuple[dict[str, Any], str]] = [({"labels": {"no spaces": "x"}}, "placement.labels"),
                                                   ({"gpus": -1}, "placement.gpus"),
                                                   ({"resources": {"slots": "many"}}, "placement.resources"),
                                                   ({"zone": "a"}, "placement")]
        for placement, field in cases:
            with pytest.raises(InvalidArgument) as caught:
                client.spawn("bad", agent("sleeper"), placement=placement)
            assert caught.value.details["field"].startswith(field), caught.value.details
