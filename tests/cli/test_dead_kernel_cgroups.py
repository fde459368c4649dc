"""After ``kill -9`` of a kernel together with its guardian, its agents' cgroups, and what an
unsandboxed agent left running in them, remain until a kernel starts: ``agentos doctor`` names
them, ``doctor --fix`` and ``agentos down`` remove them (killing what runs there), without touching
a live kernel's."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from agentos.cli.main import main
from agentos.testing.kernel import KernelProcess

#: A child that leaves the agent's session (so no parent-death signal reaches it) and stays.
_ESCAPE = "setsid sleep 300 & echo $! > {pidfile}; exec sleep 300"


def _cgroup_dirs(client, agent_id: str) -> list[Path]:
    described = client.hello()["capabilities"]["processes"]["cgroups"]
    return [Path(root) / "agentos" / described["instance"] / agent_id for root in described["roots"]]


def _pid_of(pidfile: Path) -> int:
    for _ in range(500):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.02)
    raise AssertionError(f"{pidfile} was never written")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waits for its reaper only: it runs no more.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _crashed_kernel_with_an_orphan(root: Path) -> tuple[list[Path], int]:
    dead = KernelProcess(root).start()
    client = dead.client()
    pidfile = root / "escaped.pid"
    info = client.spawn(command=["sh", "-c", _ESCAPE.format(pidfile=pidfile)], name="leaky", sandboxed=False,
                        limits={"memory": None, "cpu": None, "pids": None})
    dirs = _cgroup_dirs(client, info["id"])
    escaped = _pid_of(pidfile)
    dead.kill_with_guardian()  # its guardian too: nothing cleans up after it
    assert all(d.exists() for d in dirs) and _alive(escaped)
    return dirs, escaped


@pytest.mark.parametrize("command", [["down"], ["doctor", "--fix"]])
def test_a_crashed_kernels_cgroups_are_removed(command: list[str], tmp_path: Path, kernel, capsys) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups")
    live = kernel.client()
    neighbour = live.spawn(command=["sleep", "300"], name="neighbour", sandboxed=False)
    # Any kernel starting on this host meanwhile (another test's) cleans up too: then try again.
    for attempt in range(5):
        dead = tmp_path / f"dead{attempt}"
        dirs, escaped = _crashed_kernel_with_an_orphan(dead)
        try:
            main(["doctor"])  # its exit status depends on the host (an LLM key ...), not on this
            if "agent cgroup(s) of a kernel that died remain" not in capsys.readouterr().out:
                assert not any(d.exists() for d in dirs), "doctor missed a dead kernel's cgroups"
                continue
            code = main([*command, "--socket", str(dead / "kernel.sock")])
            out = capsys.readouterr().out
            assert not any(d.exists() for d in dirs) and not _alive(escaped)
            if "none left behind" in out or (command == ["down"] and "left behind" not in out):
                continue  # another kernel started between the two commands and cleaned up first
            if command == ["down"]:
                assert code == 0 and re.search(r"removed \d+ cgroup\(s\) a kernel that died left behind", out), out
            else:
                assert re.search(r"dead kernels' cgroups: removed \d+ \(.*\b" + dirs[0].name + r"\b", out), out
            assert [a["status"] for a in live.list_agents(name="neighbour")] == ["running"]
            assert all(d.exists() for d in _cgroup_dirs(live, neighbour["id"]))
            return
        finally:
            if _alive(escaped):
                os.kill(escaped, 9)
    pytest.fail("other kernels kept cleaning the dead kernel's cgroups first")
