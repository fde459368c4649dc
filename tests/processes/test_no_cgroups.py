"""A kernel without cgroups (``processes.cgroups: none``): limits are refused, or run
degraded and reported so; agent trees still die with the agent."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentos import Unavailable
from agentos.testing.kernel import KernelProcess

from .conftest import agent, pid_alive

MANIFEST = """\
version: 1
kernel:
  processes: {cgroups: none, kill_grace: 1s}
agents:
  unused: {command: [sh, -c, "true"]}
"""


@pytest.fixture
def bare_kernel(tmp_path: Path):
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text(MANIFEST)
    with KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]) as kernel:
        yield kernel
    assert "Traceback" not in kernel.log()


def test_limits_are_refused_not_silently_dropped(bare_kernel) -> None:
    client = bare_kernel.client()
    assert client.hello()["capabilities"]["processes"]["cgroups"]["driver"] == "none"
    with pytest.raises(Unavailable, match=r"limits \['memory'\] cannot be enforced"):
        client.spawn("x", agent("sleeper"), sandboxed=False, limits={"memory": "64Mi"})
    assert client.list_agents() == []


def test_allow_degraded_runs_and_reports(bare_kernel) -> None:
    client = bare_kernel.client()
    info = client.spawn("x", agent("stubborn"), sandboxed=False, limits={"memory": "64Mi", "pids": 8},
                        allow_degraded=True)
    cgroup = info["isolation"]["cgroup"]
    assert cgroup["driver"] == "none" and cgroup["not_enforced"] == ["cpu", "memory", "pids"]
    assert not cgroup["tracks_tree"] and "processes.cgroups: none" in cgroup["reason"]
    # cpu was not asked for: the default that could not be enforced is reported as such.
    assert info["isolation"]["degraded"] == ["limits.cpu (default)", "limits.memory", "limits.pids"]
    client.wait(id=info["id"], until="ready", timeout=60)
    main_pid, grandchild = (int(p) for p in client.logs(id=info["id"]).split()[1:3])
    end = client.kill(id=info["id"])  # the configured 1 s grace, then SIGKILL to the group
    assert end["status"] == "killed"
    assert not pid_alive(main_pid)
    # The group's SIGKILL is delivered asynchronously to the orphaned grandchild: wait for it
    # (the bound only ends a broken run).
    deadline = time.monotonic() + 20
    while pid_alive(grandchild):
        assert time.monotonic() < deadline, f"grandchild {grandchild} survived its agent"
        time.sleep(0.01)
    assert end["usage"]["memory_peak"] is None  # nothing measured it
