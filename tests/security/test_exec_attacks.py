"""EXEC crosses no trust boundary: a process exec'd into an agent holds what the agent holds,
only the agent's ancestors (or an admin) may exec into it, its limits bind the exec too, and
nothing the request carries reaches the kernel. Both kernel modes (root and unprivileged)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentos.errors import Busy

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def bystander(hostile: HostileKernel) -> Iterator[dict[str, Any]]:
    agent = hostile.admin.spawn("exec-bystander", command=["/bin/sleep", "100000"])
    try:
        yield agent
    finally:
        hostile.admin.kill(id=agent["id"], grace=0)


def test_works_in_both_modes_as_the_agent(hostile: HostileKernel, bystander: dict[str, Any]) -> None:
    result = hostile.admin.exec(bystander["name"], "id -u; hostname; grep -e NoNewPrivs -e Seccomp: "
                                                   "-e CapEff /proc/self/status")
    uid, hostname, *status = result.stdout.decode().splitlines()
    assert int(uid) == (65533 if hostile.mode == "root" else os.stat(hostile.process.root).st_uid)
    assert hostname == bystander["name"]
    assert status == ["CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"]


def test_no_exec_into_a_sibling_or_its_execs(hostile: HostileKernel, bystander: dict[str, Any]) -> None:
    other = hostile.admin.exec_start(bystander["name"], ["/bin/sleep", "100000"])
    try:
        verdict = hostile.attack("exec_attack", {"sibling": bystander["name"], "exec": other["id"]},
                                 capabilities=["spawn", "observe"], limits={"pids": 32})
    finally:
        hostile.admin.exec_signal(other["id"], "KILL")
    outcomes = verdict["outcomes"]
    assert outcomes["sibling"] == outcomes["sibling exec"] == "not_found"
    assert outcomes["self"] == outcomes["child"] == "ran"
    assert verdict["child_output"] == "ran in exec-attack-child\n"
    assert outcomes["listed"] == ["exec-attack", "exec-attack-child"]
    assert hostile.admin.exec_wait(other["id"]).signal == 9  # killed by the admin, not the attacker


def test_a_fork_bomb_inside_exec_hits_the_agents_pids_limit(hostile: HostileKernel) -> None:
    agent = hostile.admin.spawn("exec-bomb", command=["/bin/sleep", "100000"], limits={"pids": 16})
    try:
        # It keeps forking when a fork fails (a shell would give up, and the exec's subreaper
        # would then kill and reap its tree at once).
        python = hostile.admin.hello()["capabilities"]["processes"]["python"]
        bomb = hostile.admin.exec_start(agent["name"], [python, "-c", _FORK_BOMB])
        deadline = time.monotonic() + 60  # bounds a broken run only
        # The limit counts the agent's whole subtree; a slot may be held by a fork being refused.
        while (pids := _pids(hostile, agent)) < 15:
            assert time.monotonic() < deadline, f"the bomb never reached the limit ({pids})"
            time.sleep(0.05)
        for _ in range(20):
            assert _pids(hostile, agent) <= 16 and hostile.alive()
        hostile.admin.exec_signal(bomb["id"], "KILL")
        ended = hostile.admin.exec_wait(bomb["id"])  # the shell may have given up on its own first
        assert ended.signal == 9
        # The exec's subreaper killed and reaped its whole tree: the agent is alone again.
        deadline = time.monotonic() + 60  # bounds a broken run only
        while (pids := _pids(hostile, agent)) != 1:
            assert time.monotonic() < deadline, f"the bomb's processes stayed ({pids})"
            time.sleep(0.05)
        assert hostile.admin.kill(id=agent["id"], grace=0)["status"] == "killed"
    finally:
        hostile.admin.kill(id=agent["id"], grace=0)


_FORK_BOMB = """
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(100000)
    except OSError:
        pass
"""


def _pids(hostile: HostileKernel, agent: dict[str, Any]) -> int:
    return int(hostile.admin.list_agents(name=agent["name"])[0]["usage"]["pids_current"])


def test_sees_only_the_agents_view(hostile: HostileKernel, bystander: dict[str, Any]) -> None:
    state = hostile.process.root
    result = hostile.admin.exec(bystander["name"], [
        "/bin/sh", "-c", 'for p in "$@"; do ls -d "$p" >/dev/null 2>&1 && echo "$p"; done; '
        'cat /etc/shadow >/dev/null 2>&1 && echo shadow; touch /usr/x 2>/dev/null && echo wrote; '
        'ls /proc | grep -c "^[0-9]"',
        "sh", str(state), str(hostile.process.socket_path), "/root/.ssh", "/sys/kernel"])
    *shown, count = result.stdout.decode().splitlines()
    # The agent, the exec's subreaper, the shell, ls and grep: no host process.
    assert shown == [] and int(count) <= 5


def test_env_reaches_only_the_exec(hostile: HostileKernel, bystander: dict[str, Any]) -> None:
    poison = {"LD_PRELOAD": "/tmp/evil.so", "LD_LIBRARY_PATH": "/tmp", "PYTHONPATH": "/tmp/evil",
              "PYTHONSTARTUP": "/tmp/evil.py", "BASH_ENV": "/tmp/evil.sh"}
    result = hostile.admin.exec(bystander["name"], ["/bin/sh", "-c", "echo $LD_PRELOAD"], env=poison)
    assert result.stdout == b"/tmp/evil.so\n"  # its own business, inside the sandbox
    later = hostile.admin.spawn("exec-after", command=["/bin/sh", "-c", "env; sleep 100000"])
    try:
        again = hostile.admin.exec(later["name"], "env")
        for text in (again.stdout, _environ(hostile.pid), *(_environ(pid) for pid in _children(hostile.pid))):
            assert b"evil" not in text
        assert hostile.alive()
    finally:
        hostile.admin.kill(id=later["id"], grace=0)


def test_a_flood_holds_the_kernel_at_its_buffers(hostile: HostileKernel, bystander: dict[str, Any]) -> None:
    before = _rss(hostile.pid)
    flood = hostile.admin.exec_start(bystander["name"], ["/bin/cat", "/dev/zero"])
    slow = hostile.process.client(timeout=120)
    try:
        stream = iter(slow.exec_attach(flood["id"]))
        seen = sum(len(next(stream)[1]) for _ in range(8))  # then stop reading: backpressure
        for _ in range(20):
            assert _rss(hostile.pid) - before < 64 * 1024 * 1024
            hostile.admin.noop(b"still serving")
    finally:
        hostile.admin.exec_signal(flood["id"], "KILL")
        slow.close()
    # The KILL is told to the exec's subreaper, which may wait for the sandbox's CPU quota that
    # the flood used up: until it ends, a reader would get the flood's new output, not what the
    # kernel held. What the kernel held is what is read once the exec has ended.
    deadline = time.monotonic() + 60
    ended = False
    while not ended:
        ended = any(e["id"] == flood["id"] and e["status"] == "ended"
                    for e in hostile.admin.exec_list(bystander["name"]))
        assert ended or time.monotonic() < deadline, "the flood outlived its KILL by a minute"
        time.sleep(0.01)
    while True:  # until the kernel has seen the slow client go (another connection: no order)
        try:
            result = hostile.admin.exec_wait(flood["id"])
            break
        except Busy:
            time.sleep(0.01)
    assert result.signal == 9 and seen > 0
    assert len(result.stdout) <= 512 * 1024 and hostile.alive()


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError):
                pass
    return found


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
