"""Faults: an agent that hogs memory, forks without end, spins, or ignores SIGTERM, and the
kernel carries on; a kernel stopped or killed leaves nothing behind."""
from __future__ import annotations

import json
import signal
import threading
from typing import Any

from agentos.cgroups import LEAF
from agentos.testing.kernel import KernelProcess

from .conftest import (
    adversarial,
    agent,
    kernel_cgroup_dirs,
    pid_alive,
    require_cgroup_limits,
)

MiB = 1024 * 1024


def test_memory_hog_is_oom_killed_and_others_carry_on(shared_kernel, sandboxed) -> None:
    require_cgroup_limits()
    client = shared_kernel.client()
    mode = "sandboxed" if sandboxed else "plain"
    healthy = client.spawn(f"healthy-{mode}", agent("sleeper"), sandboxed=sandboxed, limits={"memory": "128Mi"})
    hog = client.spawn(f"hog-{mode}", adversarial("memory_hog"), sandboxed=sandboxed, limits={"memory": "64Mi"})
    end = client.wait(id=hog["id"], timeout=60)
    assert end["status"] == "oom_killed"
    assert end["signal"] == signal.SIGKILL
    assert end["usage"]["oom_kills"] >= 1
    assert end["usage"]["memory_peak"] <= 64 * MiB
    client.wait(id=healthy["id"], until="ready", timeout=60)
    assert client.list_agents(name=f"healthy-{mode}")[0]["status"] == "running"
    assert pid_alive(healthy["pid"])
    assert client.echo("kernel alive") == "kernel alive"


def test_fork_bomb_stops_at_pids(shared_kernel, sandboxed) -> None:
    require_cgroup_limits()
    client = shared_kernel.client()
    name = f"bomb-{'sandboxed' if sandboxed else 'plain'}"
    bomb = client.spawn(name, adversarial("fork_bomb"), sandboxed=sandboxed, limits={"pids": 16})
    report = _first_report(client, bomb["id"])
    assert report["refused"] == "EAGAIN"
    children = report["children"]
    assert children < 16
    usage = client.list_agents(name=name)[0]["usage"]
    assert usage["pids_current"] <= 16
    assert client.echo("kernel alive") == "kernel alive"
    tree = _cgroup_procs(shared_kernel, bomb["id"])
    assert len(tree) == children + 1
    end = client.kill(id=bomb["id"], grace=1)
    assert end["status"] == "killed"
    assert [pid for pid in tree if pid_alive(pid)] == []  # the whole tree went with it


def test_cpu_hog_is_throttled_to_its_quota(shared_kernel) -> None:
    require_cgroup_limits()
    client = shared_kernel.client()
    hog = client.spawn("spinner", adversarial("cpu_hog"), args=["600"], sandboxed=False,
                       limits={"cpu": 0.2})
    client.wait(id=hog["id"], until="ready", timeout=60)
    usage = client.list_agents(name="spinner")[0]["usage"]
    while usage["cpu_nr_throttled"] < 10:
        usage = client.list_agents(name="spinner")[0]["usage"]
    # Read from the cgroup's own accounting: each 100 ms period grants at most 20 ms of CPU.
    # (The first period may have begun before the agent's process joined: allow one extra.)
    assert usage["cpu_usage_usec"] <= (usage["cpu_nr_periods"] + 1) * 20_000 * 1.05 + 50_000
    assert usage["cpu_throttled_usec"] > 0
    client.kill(id=hog["id"], grace=1)


def test_kill_of_a_stubborn_agent_does_not_delay_other_clients(shared_kernel) -> None:
    killer, other = shared_kernel.client(), shared_kernel.client()
    stubborn = killer.spawn("stubborn", agent("stubborn"), sandboxed=False)
    killer.wait(id=stubborn["id"], until="ready", timeout=60)
    main_pid, grandchild = (int(p) for p in killer.logs(id=stubborn["id"]).split()[1:3])
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(killer.kill(id=stubborn["id"], grace=30)))
    thread.start()
    try:
        # KILL has sent SIGTERM (ignored) and waits out its grace period on a timer...
        assert other.noop_batch([b"x"] * 200) == [b"x"] * 200
        [listed] = other.list_agents(name="stubborn")
        assert listed["status"] == "running" and thread.is_alive()
        # ...while the kernel answers everyone else. A second KILL with no grace ends it now.
        other.kill(id=stubborn["id"], grace=0)
    finally:
        thread.join(60)
    assert result["status"] == "killed" and result["signal"] == signal.SIGKILL
    assert not pid_alive(main_pid) and not pid_alive(grandchild)


def test_kernel_sigterm_leaves_nothing_behind(tmp_path, sandboxed) -> None:
    mounts_before = _mount_points()
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        client = kernel.client()
        stubborn = client.spawn("stubborn", agent("stubborn"), sandboxed=sandboxed)
        sleeper = client.spawn("sleeper", agent("sleeper"), sandboxed=sandboxed)
        client.wait(id=stubborn["id"], until="ready", timeout=60)
        client.wait(id=sleeper["id"], until="ready", timeout=60)
        # Host pids (a sandboxed agent sees its own pid namespace): from the cgroups.
        pids = _cgroup_procs(kernel, stubborn["id"]) + _cgroup_procs(kernel, sleeper["id"])
        assert len(pids) == 3
        cgroup_dirs = kernel_cgroup_dirs(kernel.pid)
    finally:
        assert kernel.stop() == 0, kernel.log()
    assert "Traceback" not in kernel.log()
    assert not kernel.socket_path.exists()
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert [d for d in cgroup_dirs if d.exists()] == []
    assert _mount_points() == mounts_before


def test_dead_kernel_leftovers_are_cleaned_by_the_next(tmp_path) -> None:
    require_cgroup_limits()
    first = KernelProcess(tmp_path / "k1").start()
    try:
        client = first.client()
        info = client.spawn("orphan", agent("stubborn"), sandboxed=False, limits={"pids": 8})
        client.wait(id=info["id"], until="ready", timeout=60)
        pids = [int(p) for p in client.logs(id=info["id"]).split()[1:3]]
        stale = kernel_cgroup_dirs(first.pid)
    finally:
        first.kill_with_guardian()  # a crash its guardian cannot clean up after: no cleanup ran
    assert any(d.exists() for d in stale)
    with KernelProcess(tmp_path / "k2") as second:
        second.client().echo("up")  # started: stale subtrees are gone before it listens
        assert [d for d in stale if d.exists()] == []
        assert [pid for pid in pids if pid_alive(pid)] == []


def _first_report(client, agent_id: str) -> dict[str, Any]:
    """The first JSON line an adversarial agent prints."""
    text = ""
    for chunk in client.follow_logs(id=agent_id):
        text += chunk
        if "\n" in text:
            return json.loads(text.split("\n", 1)[0])
    raise AssertionError(f"agent ended without a report: {text!r}")


def _cgroup_procs(kernel, agent_id: str) -> list[int]:
    pids: set[int] = set()
    for directory in kernel_cgroup_dirs(kernel.pid):
        # v1's memory directory has no leaf: the agent's processes are in it.
        leaf = directory / agent_id / LEAF
        procs = leaf if leaf.is_dir() else directory / agent_id
        pids.update(int(p) for p in (procs / "cgroup.procs").read_text().split())
    return sorted(pids)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


