"""The kernel's descriptors per live agent (issue 17; the budget is in docs/endurance.md).

Its open-file limit bounds the agents it can run: 10,000 of them and their clients must fit
in 20,000. An idle agent costs the kernel's table one descriptor, its connection (a sandbox
served by agentos-init: init's control socket instead); its pidfd and output pipe are parked
in the descriptor holder (processes/holder.py), and an agent that wrote gives back what the
kernel took to read it once it has been quiet for a while.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from agentos.client.sync import Client
from agentos.processes.logs import REST_AFTER
from agentos.sandbox import initd
from agentos.testing.kernel import KernelProcess

from .conftest import agent

#: Descriptors of the kernel's table per idle agent (docs/endurance.md).
BUDGET = 1.0
#: Each kind of agent, this many at once.
EACH = 20
#: Descriptors the kernel may open meanwhile for other reasons (a cache, a log file rotating).
SLACK = 4


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, at_most: int, timeout: float = 30.0) -> int:
    """The kernel's descriptor count once it is at most ``at_most`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    count = open_fds(pid)
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
        count = open_fds(pid)
    return count


def spawn_kinds(client: Client, prefix: str) -> list[str]:
    """One agent of each kind: a program plain and sandboxed (exec'd), a Python script plain and
    sandboxed (forked by the zygote; this one says READY on its connection and prints a line),
    and a sandbox served by agentos-init."""
    assert initd.binary() is not None, "agentos-init is built with the package"
    return [client.spawn(f"{prefix}plain", command=["sleep", "1000"], sandboxed=False)["id"],
            client.spawn(f"{prefix}boxed", command=["sleep", "1000"], sandboxed=True)["id"],
            client.spawn(f"{prefix}script", initd.IDLE, sandboxed=False)["id"],
            client.spawn(f"{prefix}sdk", agent("sleeper"), sandboxed=True)["id"],
            client.spawn(f"{prefix}sandbox", initd.IDLE, sandboxed=True)["id"]]


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: sandboxed agents")


def test_an_idle_agent_costs_the_kernel_one_descriptor(kernel: KernelProcess) -> None:
    client = kernel.client()
    before = open_fds(kernel.pid)
    ids = [agent_id for i in range(EACH) for agent_id in spawn_kinds(client, f"a{i}-")]
    allowed = before + int(BUDGET * len(ids)) + SLACK
    after = settled_fds(kernel.pid, allowed)
    assert after <= allowed, (f"{len(ids)} idle agents took {after - before} descriptors of the kernel's "
                              f"table, over the budget of {BUDGET:g} each")
    # Each still ends as it should: its exit is seen with nothing of it in the kernel's table.
    for agent_id in ids:
        assert client.kill(id=agent_id)["status"] == "killed"
    assert settled_fds(kernel.pid, before + SLACK) <= before + SLACK


def test_an_agent_that_wrote_gives_its_descriptors_back_once_quiet(kernel: KernelProcess) -> None:
    client = kernel.client()
    before = open_fds(kernel.pid)
    talkers = [client.spawn(f"talker{i}", command=["sh", "-c", "echo hello $0; exec sleep 1000", str(i)],
                            sandboxed=i % 2 == 0)["id"] for i in range(EACH)]
    for i, talker in enumerate(talkers):
        deadline = time.monotonic() + 30
        while client.logs(id=talker) != f"hello {i}\n":
            assert time.monotonic() < deadline, "the agent's output never reached its log"
            time.sleep(0.05)
    # Reading them took a copy of each pipe and the log file; quiet, they go back to the holder.
    allowed = before + int(BUDGET * len(talkers)) + SLACK
    assert settled_fds(kernel.pid, allowed) <= allowed
    # Output after a quiet spell longer than the rest's is read too: the parked pipe wakes the kernel.
    sayer = client.spawn("late", command=["sh", "-c", f"echo one; sleep {REST_AFTER + 1}; echo two; exec sleep 1000"],
                         sandboxed=False)["id"]
    deadline = time.monotonic() + 30
    while client.logs(id=sayer) != "one\ntwo\n":
        assert time.monotonic() < deadline, "output written after a quiet spell never reached the log"
        time.sleep(0.05)
    for agent_id in [*talkers, sayer]:
        client.kill(id=agent_id)


def test_a_kernel_started_with_sigchld_ignored_still_reaps_its_agents(tmp_path: Path) -> None:
    # The kernel signals and reaps agents by pid, which holds only while nobody else reaps them:
    # an inherited SIG_IGN would have the host reap them at exit (and their pids be reused), and
    # the zygote, which inherits it, could not reap its own probes (the kernel would not start).
    ignoring = ("import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, '-m', 'agentos', 'kernel', *sys.argv[1:]])")
    kernel = KernelProcess(tmp_path / "k", command=[sys.executable, "-c", ignoring]).start()
    try:
        client = kernel.client()
        for sandboxed in (False, True):
            agent_id = client.spawn(f"three{sandboxed}", command=["sh", "-c", "exit 3"], sandboxed=sandboxed)["id"]
            assert client.wait(id=agent_id, timeout=30)["exit_code"] == 3
    finally:
        kernel.stop_checked()
