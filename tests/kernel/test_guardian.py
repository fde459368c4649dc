"""Nothing outlives a kernel, however it ends (kernel/guardian.py, docs/processes.md "No orphans").

Each test starts ``agentos kernel`` (the guardian, whose child is the kernel) as root, with
cgroups, and as a throwaway unprivileged user without any (no delegated cgroup: the guardian's
walk of its children is all there is). Its agents are an unsandboxed one that leaves a
``setsid``, double-forked ``sleep`` behind and a sandboxed one that does the same inside its
sandbox. Processes are found on the host by a command line unique to the test, whatever pid
namespace they are in.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.testing.kernel import KernelProcess
from tests.security.conftest import User, module_user
from tests.unprivileged import wrapper

#: An agent that starts a background ``sleep`` in a session of its own, whose parent exits at
#: once (no parent-death signal, process group or session ties it to the agent), says its pid
#: and then sleeps itself.
LEAVE_BEHIND = "setsid sh -c 'sleep {marker} & echo left $!' & exec sleep {marker}"
#: A wait for what the kernel's end must bring about, never a speed requirement.
DEADLINE = 60.0

MODES = ["root", "unprivileged"]


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    for made in module_user("g", "creates a throwaway user"):
        yield made
        shutil.rmtree(Path(tempfile.gettempdir()).resolve() / f"agentos-{made.uid}", ignore_errors=True)


class Team:
    """A kernel started by ``agentos kernel`` and the processes its two agents run."""

    def __init__(self, mode: str, user: User) -> None:
        self.mode = mode
        self.root = Path(tempfile.mkdtemp(prefix="agentos-guardian-k-"))
        self.root.chmod(0o755)
        command = [sys.executable, "-m", "agentos", "kernel"]
        if mode == "unprivileged":
            os.chown(self.root, user.uid, user.gid)
            command = [*wrapper(user.uid, user.gid), *command]
        self.kernel = KernelProcess(self.root / "k", command=command)
        if mode == "unprivileged":
            (self.root / "k").mkdir()
            os.chown(self.root / "k", user.uid, user.gid)
        self.marker = f"{30000 + secrets.randbelow(10000)}.{secrets.randbelow(1000)}"
        self.pids: list[int] = []
        self.cgroup_dirs: list[Path] = []

    def start(self) -> Team:
        """Start the kernel and both agents; wait until all four sleeps run."""
        # As from a terminal, SIGHUP at its default: a kernel started with it ignored (under
        # nohup, as CI may run) keeps it ignored, and the SIGHUP case would wait forever.
        previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        try:
            self.kernel.start()
        finally:
            signal.signal(signal.SIGHUP, previous)
        client = self.kernel.client()
        command = ["sh", "-c", LEAVE_BEHIND.format(marker=self.marker)]
        plain = client.spawn(command=command, name="plain", sandboxed=False)
        client.spawn(command=command, name="boxed", sandboxed=True)
        self.pids = self._wait_for(4)
        # The unsandboxed agent's pid is a host pid: the one it left is among ours.
        left = int(_await(lambda: re.search(r"left (\d+)", client.logs(id=plain["id"])), "plain's report")[1])
        assert left in self.pids
        cgroups = client.hello()["capabilities"]["processes"]["cgroups"]
        self.cgroup_dirs = [Path(root) / "agentos" / cgroups["instance"] for root in cgroups["roots"]]
        if self.mode == "root":
            assert cgroups["driver"] != "none" and all(d.is_dir() for d in self.cgroup_dirs), cgroups
        return self

    def _wait_for(self, count: int) -> list[int]:
        return _await(lambda: (found := self.running()) and len(found) == count and found,
                      f"{count} processes running `sleep {self.marker}`")

    def running(self) -> list[int]:
        """Live host processes running this team's ``sleep``."""
        wanted = f"sleep\0{self.marker}\0".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if f.read() != wanted:
                            continue
                    with open(f"/proc/{entry}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            continue
                except OSError:
                    continue
                found.append(int(entry))
        return sorted(found)

    def close(self) -> None:
        """Leave nothing behind, whatever the test did."""
        self.kernel.stop()
        for pid in self.running():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _await(probe, what: str):
    deadline = time.monotonic() + DEADLINE
    while not (result := probe()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)
    return result


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(params=MODES)
def team(request: pytest.FixtureRequest, user: User) -> Iterator[Team]:
    made = Team(request.param, user)
    try:
        yield made.start()
    finally:
        made.close()


def test_kill_9_of_the_kernel_leaves_nothing_running(team: Team) -> None:
    proc = team.kernel.proc
    assert proc is not None and team.kernel.pid != proc.pid
    os.kill(team.kernel.pid, signal.SIGKILL)
    assert proc.wait(DEADLINE) == 128 + signal.SIGKILL, team.kernel.log()
    # The guardian reaped its children before it exited: the wait is for the sandbox's own.
    _await(lambda: team.running() == [], f"every `sleep {team.marker}` to end")
    assert all(_gone(pid) for pid in [team.kernel.pid, *team.pids])
    assert [d for d in team.cgroup_dirs if d.exists()] == []
    log = team.kernel.log()
    assert f"the kernel (pid {team.kernel.pid}) was killed by SIGKILL" in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("how", ["SIGTERM to the guardian", "SIGINT to its group (Ctrl-C)",
                                 "SIGHUP to its group (terminal closed)"])
def test_a_signal_to_the_guardian_stops_the_kernel_gracefully(team: Team, how: str) -> None:
    proc = team.kernel.proc
    assert proc is not None
    sig = signal.Signals[how.split()[0]]
    if "group" in how:
        os.killpg(proc.pid, sig)  # what a terminal does: the guardian and the kernel both get it
    else:
        proc.send_signal(sig)
    assert proc.wait(DEADLINE) == 0, team.kernel.log()
    log = team.kernel.log()
    for name in ("plain", "boxed"):
        assert re.search(rf"agent {name} \(\w+\) (Status\.)?(KILLED|killed)", log), log
    assert "shutting down" in log and "was killed by" not in log, log
    assert not team.kernel.socket_path.exists()
    _await(lambda: team.running() == [], f"every `sleep {team.marker}` to end")
    assert [d for d in team.cgroup_dirs if d.exists()] == []


def test_kill_9_of_the_guardian_stops_the_kernel_and_its_agents(team: Team) -> None:
    proc = team.kernel.proc
    assert proc is not None
    agents = [pid for pid in team.pids if _parent(pid) == team.kernel.pid]
    assert len(agents) == 2
    proc.kill()
    proc.wait()
    # Its parent-death signal is SIGTERM: the kernel stops as gracefully as when asked.
    _await(lambda: _gone(team.kernel.pid), "the kernel to exit")
    log = team.kernel.log()
    assert "shutting down" in log and "Traceback" not in log, log
    assert not team.kernel.socket_path.exists()
    _await(lambda: all(_gone(pid) for pid in agents), "the agents to end")
    if team.mode == "root":
        # Their cgroups held what they left: nothing survives. (Without cgroups, what the
        # unsandboxed agent left was the dead guardian's child: pid 1's now, see docs/processes.md.)
        _await(lambda: team.running() == [], f"every `sleep {team.marker}` to end")
        assert [d for d in team.cgroup_dirs if d.exists()] == []


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
