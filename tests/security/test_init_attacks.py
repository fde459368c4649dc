"""A sandbox's init (agentos-init, its pid 1) under attack from the processes exec'd into the
sandbox, both kernel modes (root and unprivileged): none finds or uses init's control socket
(not in its descriptors, not openable through /proc/1/fd, not a name anyone can connect to),
none ptraces, signals or stops init, none reaches another exec or its own exec's leader (whose
control socket carries the word that ends the exec); the sandbox serves execs after each
attempt, each exec confined as the sandbox is."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from agentos.client._sync_api import Sandbox

from .conftest import HostileKernel

#: Run inside the sandbox by EXEC: every attempt on init, each outcome an errno name or "done".
_ATTACK = r"""
import ctypes, errno, json, os, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "done"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def syscall(*args):
    if libc.syscall(*args) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
out["own fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
attempt("list /proc/1/fd", lambda: os.listdir("/proc/1/fd"))
for fd in range(3, 8):
    attempt(f"open /proc/1/fd/{fd}", lambda: os.open(f"/proc/1/fd/{fd}", os.O_RDWR))
    attempt(f"read /proc/1/fdinfo/{fd}", lambda: open(f"/proc/1/fdinfo/{fd}").read())
attempt("read /proc/1/environ", lambda: open("/proc/1/environ", "rb").read())
attempt("read /proc/1/mem", lambda: open("/proc/1/mem", "rb").read(1))
attempt("ptrace attach 1", lambda: syscall(101, 16, 1, 0, 0))   # PTRACE_ATTACH
attempt("ptrace seize 1", lambda: syscall(101, 0x4206, 1, 0, 0))  # PTRACE_SEIZE
pidfd = os.pidfd_open(1)
for fd in range(3, 8):
    attempt(f"pidfd_getfd 1 {fd}", lambda: syscall(438, pidfd, fd, 0))
for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGHUP, signal.SIGSEGV):
    attempt(f"kill 1 {sig.name}", lambda: os.kill(1, sig))
attempt("pidfd_send_signal 1 SIGTERM", lambda: signal.pidfd_send_signal(pidfd, signal.SIGTERM))
# The exec's leader (its parent) holds the exec's control socket, where its word of the command's
# end ends the exec: a forged one would end it while its tree runs on.
leader = os.getppid()
attempt("list the leader's fds", lambda: os.listdir(f"/proc/{leader}/fd"))
leader_pidfd = os.pidfd_open(leader)
for fd in range(3, 12):
    attempt(f"open the leader's fd {fd}", lambda: os.open(f"/proc/{leader}/fd/{fd}", os.O_RDWR))
    attempt(f"pidfd_getfd the leader's {fd}", lambda: syscall(438, leader_pidfd, fd, 0))
attempt("ptrace attach the leader", lambda: syscall(101, 16, leader, 0, 0))
attempt("ptrace seize the leader", lambda: syscall(101, 0x4206, leader, 0, 0))
names = [line.split()[-1] for line in open("/proc/net/unix").read().splitlines()[1:] if len(line.split()) > 7]
out["abstract names"] = [n for n in names if n.startswith("@")]
for name in out["abstract names"]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    attempt(f"connect {name}", lambda: s.connect("\0" + name[1:]))
if len(sys.argv) > 1:
    attempt("kill the other exec", lambda: os.kill(int(sys.argv[1]), signal.SIGKILL))
print(json.dumps(out))
"""


@pytest.fixture
def sandbox(hostile: HostileKernel) -> Iterator[Sandbox]:
    with hostile.admin.sandbox(limits={"pids": 64}) as sb:
        yield sb


def _attack(hostile: HostileKernel, sb: Sandbox, *args: str) -> dict[str, Any]:
    python = hostile.admin.hello()["capabilities"]["processes"]["python"]
    result = sb.exec([python, "-c", _ATTACK, *args])
    assert result.exit_code == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def test_nothing_inside_reaches_init_or_its_control_socket(hostile: HostileKernel, sandbox: Sandbox) -> None:
    assert sandbox.isolation["sandbox"]["init"] == "agentos-init"
    other = sandbox.exec_start(["sleep", "1000"])
    try:
        outcome = _attack(hostile, sandbox, str(other["pid"]))
        # Its own descriptors are its stdio (and the listing's own): nothing of init's.
        assert outcome.pop("own fds") == [0, 1, 2, 3]
        # Init's control socket is a socketpair: no name to connect to, and nothing else is listening.
        assert outcome.pop("abstract names") == []
        # Not dumpable, a Landlock domain below the exec's, seccomp: every way in is refused.
        assert [name for name, verdict in outcome.items() if verdict == "done"] == [], outcome
        assert {outcome[f"kill 1 {sig}"] for sig in ("SIGTERM", "SIGKILL", "SIGSTOP")} == {"EPERM"}
        assert outcome["kill the other exec"] == "EPERM"  # another exec's Landlock domain
        assert sandbox.exec("echo alive").stdout == b"alive\n"
        assert hostile.admin.exec_list(sandbox.name)[0]["status"] == "running"  # the other exec runs on
    finally:
        hostile.admin.exec_signal(other["id"], "KILL")


def test_an_exec_holds_what_the_sandbox_holds(hostile: HostileKernel, sandbox: Sandbox) -> None:
    result = sandbox.exec("id -u; grep -e NoNewPrivs -e Seccomp: -e CapEff /proc/self/status; "
                          "touch /etc/x 2>&1; touch /tmp/x && echo wrote")
    uid, *rest = result.stdout.decode().splitlines()
    assert int(uid) == (65533 if hostile.mode == "root" else os.stat(hostile.process.root).st_uid)
    assert rest[:3] == ["CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"]
    assert "Read-only file system" in rest[3] or "Permission denied" in rest[3]
    assert rest[4] == "wrote"
    # Its environment is the sandbox's and its own: never the kernel's connection or keys.
    env = sandbox.exec("env", env={"MINE": "1"}).stdout.decode().splitlines()
    assert "MINE=1" in env and not [line for line in env if line.startswith(("AGENTOS_FD", "AGENTOS_API"))]
