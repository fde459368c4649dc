"""A kernel stopped with SIGTERM while many agents run stops them all itself: each is signalled
(a slice of them at a time), reaped, its cgroup emptied and removed, and the kernel exits 0
with nothing left for its guardian to clean (processes, cgroups) and no agent left running."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from agentos.testing.kernel import KernelProcess

from .conftest import kernel_cgroup_dirs, pid_alive

#: Sandboxed sleepers: pid 1 of their namespaces, which SIGTERM alone would not end.
SANDBOXED = 24
#: Unsandboxed agents, each with a child outside its own process group: only the cgroup finds it.
PLAIN = 8
#: ``processes.keep_ended`` of the kernel whose shutdown ends more agents than that.
KEEP = 3


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc's children lists."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(child) for child in f.read().split()]
            except FileNotFoundError:
                continue
            found += children
            pending += children
    return found


def test_sigterm_with_many_agents_running_stops_them_all_and_leaves_nothing(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k").start()
    assert kernel.proc is not None
    try:
        client = kernel.client(timeout=120)
        agents = [client.spawn(f"boxed{n}", command=["sleep", "86400"], sandboxed=True) for n in range(SANDBOXED)]
        # setsid: the child leaves the agent's process group, as a daemon would.
        agents += [client.spawn(f"plain{n}", command=["sh", "-c", "setsid sleep 86400 & exec sleep 86400"],
                                sandboxed=False) for n in range(PLAIN)]
        # Under the guardian: the kernel, its zygote, the agents, and the plain agents' children.
        while len(_descendants(kernel.proc.pid)) < len(agents) + PLAIN:
            time.sleep(0.02)
        processes = _descendants(kernel.proc.pid)
        cgroups = kernel_cgroup_dirs(kernel.pid)
        assert all(directory.is_dir() for directory in cgroups)
        # Besides the agents', the spare cgroup of the zygote's embryo (processes/spares.py).
        assert len({p.name for p in cgroups[0].iterdir()
                    if p.is_dir() and not p.name.startswith("spare-")}) == len(agents)
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()
    log = kernel.log()
    assert [pid for pid in processes if pid_alive(pid)] == []
    assert [str(directory) for directory in cgroups if directory.exists()] == []
    # The kernel stopped every agent itself: its guardian found nothing to kill or remove.
    assert "agentos.guardian" not in log, log
    assert log.count("killed: exit code") == len(agents), log


def test_an_ended_agents_main_process_is_reaped_not_left_a_zombie(tmp_path: Path) -> None:
    """Its end is read on the loop without reaping it (WNOWAIT), and a teardown thread reaps
    it: whether its pid namespace went with it or not, nothing is left in the process table."""
    with KernelProcess(tmp_path / "k") as kernel:
        client = kernel.client(timeout=120)
        pids = [client.spawn(f"reaped{n}", command=["sleep", "86400"], sandboxed=sandboxed)["pid"]
                for n, sandboxed in enumerate((True, False))]
        for n in range(len(pids)):
            assert client.kill(name=f"reaped{n}", grace=60)["status"] == "killed"
        deadline = time.monotonic() + 60
        while any(os.path.exists(f"/proc/{pid}") for pid in pids):
            assert time.monotonic() < deadline, "a killed agent's process was never reaped"
            time.sleep(0.02)


def test_a_shutdown_forgets_the_agents_it_ended_past_keep_ended(tmp_path: Path) -> None:
    """A shutdown forgets the agents it ends past ``processes.keep_ended`` once they have all
    ended, not one per end: the ledger it leaves the next kernel holds that many of them."""
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text(f"kernel:\n  processes:\n    keep_ended: {KEEP}\n"
                        "agents:\n  unused: {command: [sh, -c, 'true']}\n")  # a manifest declares one
    kernel = KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]).start()
    try:
        client = kernel.client(timeout=120)
        ids = {client.spawn(f"ended{n}", command=["sleep", "86400"], sandboxed=n % 2 == 0)["id"]
               for n in range(3 * KEEP)}
    except BaseException:
        kernel.kill()
        raise
    kernel.stop_checked()
    with sqlite3.connect(kernel.state_dir / "agents.db") as ledger:
        rows = ledger.execute("SELECT id, status, reason FROM agents").fetchall()
    assert len(rows) == KEEP, rows
    assert {agent_id for agent_id, _, _ in rows} <= ids
    assert {(status, reason) for _, status, reason in rows} == {("killed", "shutdown")}
