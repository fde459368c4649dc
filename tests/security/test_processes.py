"""An agent cannot touch processes outside its tree, and no resource bomb outlives its limits
or harms the kernel: fork, memory, file descriptors, disk."""
from __future__ import annotations

import os
from typing import Any

import pytest

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def victim(hostile: HostileKernel) -> dict[str, Any]:
    agent = hostile.spawn("victim", "victim-secret", name="bystander")
    hostile.admin.wait(id=agent["id"], until="ready", timeout=60)
    return agent


@pytest.fixture(scope="module")
def processes(hostile: HostileKernel, victim: dict[str, Any]) -> dict[str, Any]:
    return hostile.attack("proc_attack", {"kernel": hostile.pid, "victim": victim["pid"]})


def test_sees_only_its_own_tree(processes: dict[str, Any]) -> None:
    assert processes["visible"] == [1]


@pytest.mark.parametrize("who", ["kernel", "victim"])
def test_no_ptrace_of_the_kernel_or_another_agent(processes: dict[str, Any], who: str) -> None:
    outcomes = processes["outcomes"]
    assert outcomes[f"ptrace attach the {who}"] == outcomes[f"ptrace seize the {who}"] == "EPERM"
    assert outcomes[f"read the {who}'s environ"] == "ENOENT"


@pytest.mark.parametrize("who", ["kernel", "victim"])
def test_no_signals_to_the_kernel_or_another_agent(hostile: HostileKernel, victim: dict[str, Any],
                                                   processes: dict[str, Any], who: str) -> None:
    outcomes = processes["outcomes"]
    for attempt in ("pidfd_open", "SIGSTOP", "SIGKILL"):
        assert outcomes[f"{attempt} the {who}"] == "ESRCH", attempt
    assert hostile.alive()
    assert hostile.admin.list_agents(name="bystander")[0]["status"] == "running"
    assert _state(victim["pid"]) in "SR"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_fork_bomb_stops_at_the_pids_limit(hostile: HostileKernel) -> None:
    bomb = hostile.spawn("fork_bomb", "100000", limits={"pids": 32})
    try:
        (report,) = hostile.wait_output(bomb)
        assert report["refused"] == "EAGAIN" and report["children"] < 32
        assert hostile.alive()
    finally:
        hostile.admin.kill(id=bomb["id"], grace=0)


def test_memory_bomb_is_oom_killed_and_the_kernel_carries_on(hostile: HostileKernel) -> None:
    bomb = hostile.spawn("memory_hog", "4096", limits={"memory": "64Mi"})
    ended = hostile.admin.wait(id=bomb["id"], timeout=90)
    assert ended["status"] == "oom_killed"
    assert max(line["mib"] or 0 for line in hostile.output(bomb)) < 64
    assert hostile.alive()


def test_fd_bomb_stops_at_its_rlimit(hostile: HostileKernel) -> None:
    report = hostile.attack("fd_bomb", "1000000", limits={"memory": "256Mi"})
    assert report["refused"] == "EMFILE"
    assert report["opened"] < report["hard_limit"]
    assert hostile.alive()


def test_disk_bomb_in_private_tmp_is_bounded_by_memory(hostile: HostileKernel) -> None:
    # The private /tmp is a tmpfs: its pages are charged to the agent's memory cgroup.
    bomb = hostile.spawn("disk_bomb", "2048", limits={"memory": "64Mi"})
    ended = hostile.admin.wait(id=bomb["id"], timeout=90)
    written = max(line["mib"] for line in hostile.output(bomb))
    assert ended["status"] == "oom_killed" or hostile.output(bomb)[-1].get("refused") in ("ENOSPC", "ENOMEM")
    assert written < 64
    assert not os.path.exists("/tmp/disk-bomb")
    assert hostile.alive()

