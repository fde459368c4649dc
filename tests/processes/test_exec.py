"""EXEC against a real kernel: a command inside a running agent, its streams, stdin, exit,
timeout, signals, background handles, a terminal, and its confinement (the agent's own)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentos import Client
from agentos.errors import InvalidArgument, NotFound
from agentos.testing.kernel import KernelProcess

from .conftest import pid_alive


@pytest.fixture(scope="module")
def kernel(shared_kernel: KernelProcess) -> Iterator[Client]:
    with shared_kernel.client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module", params=[True, False], ids=["sandboxed", "plain"])
def box(request: pytest.FixtureRequest, kernel: Client) -> Iterator[dict[str, Any]]:
    """An idle agent to exec into."""
    name = f"box-{'s' if request.param else 'p'}"
    agent = kernel.spawn(name, command=["/bin/sleep", "100000"], sandboxed=request.param,
                         limits={"pids": 64})
    try:
        yield agent
    finally:
        kernel.kill(id=agent["id"], grace=0)


def test_argv_and_shell_separate_streams_and_exit_code(kernel: Client, box: dict[str, Any]) -> None:
    result = kernel.exec(None, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], id=box["id"])
    assert (result.stdout, result.stderr, result.exit_code, result.signal) == (b"out\n", b"err\n", 3, None)
    shell = kernel.exec(box["name"], "echo hi | tr a-z A-Z")
    assert shell.exit_code == 0 and shell.stdout == b"HI\n"


def test_stdin_in_the_request_and_streamed(kernel: Client, box: dict[str, Any]) -> None:
    assert kernel.exec(box["name"], ["/bin/cat"], stdin=b"\x00\xffbytes").stdout == b"\x00\xffbytes"
    handle = kernel.exec_start(box["name"], ["/bin/cat"], stdin="first ", stdin_open=True)
    assert kernel.exec_input(handle["id"], "second ")["written"] == 7
    assert kernel.exec_input(handle["id"], b"third", eof=True)["closed"]
    result = kernel.exec_wait(handle["id"])
    assert result.stdout == b"first second third" and result.exit_code == 0


def test_streamed_output_arrives_whole(kernel: Client, box: dict[str, Any]) -> None:
    stream = kernel.exec_stream(box["name"], "head -c 5000000 /dev/zero; echo done >&2")
    sizes = {"stdout": 0, "stderr": 0}
    for name, data in stream:
        sizes[name] += len(data)
    assert sizes == {"stdout": 5000000, "stderr": 5}
    assert stream.result is not None and stream.result.exit_code == 0 and stream.id == stream.result.id


def test_timeout_kills_the_whole_group(kernel: Client, box: dict[str, Any]) -> None:
    result = kernel.exec(box["name"], "sleep 100000 & echo $!; sleep 100000", timeout=0.5)
    assert result.timed_out and result.signal == 9 and result.exit_code is None
    assert _only_the_agent_left(box)


def test_the_end_of_a_command_ends_its_group(kernel: Client, box: dict[str, Any]) -> None:
    assert kernel.exec(box["name"], "sleep 100000 & echo started").stdout == b"started\n"
    assert _only_the_agent_left(box)


def test_signals_reach_the_group_or_the_process(kernel: Client, box: dict[str, Any]) -> None:
    handle = kernel.exec_start(box["name"], ["/bin/sleep", "100000"])
    assert kernel.exec_signal(handle["id"], "SIGTERM")["delivered"]
    result = kernel.exec_wait(handle["id"])
    assert result.signal == 15 and not result.timed_out
    assert not kernel.exec_signal(handle["id"], 9)["delivered"]


def test_background_output_is_kept_bounded(kernel: Client, box: dict[str, Any]) -> None:
    handle = kernel.exec_start(box["name"], "head -c 3000000 /dev/zero; echo end")
    while kernel.exec_list(box["name"]) and _status(kernel, box, handle["id"]) == "running":
        time.sleep(0.05)
    result = kernel.exec_wait(handle["id"])
    assert result.stdout.endswith(b"\x00end\n") and len(result.stdout) <= 256 * 1024 + 64 * 1024
    assert result.dropped["stdout"] == 3000004 - len(result.stdout)


def test_env_adds_to_the_agents_and_cwd_is_in_its_view(kernel: Client, box: dict[str, Any]) -> None:
    result = kernel.exec(box["name"], 'echo "$FOO|$AGENTOS_AGENT_NAME|${AGENTOS_FD-unset}"; pwd',
                         env={"FOO": "bar"}, cwd="/tmp")
    assert result.stdout.decode().splitlines() == [f"bar|{box['name']}|unset", "/tmp"]


def test_confined_as_the_agent(kernel: Client, box: dict[str, Any]) -> None:
    handle = kernel.exec_start(box["name"], ["/bin/sleep", "100000"])
    try:
        # The exec's subreaper and its command: both hold exactly what the agent holds.
        pids = [p for p in cgroup_procs(box["pid"]) if p != box["pid"]]
        assert len(pids) == 2
        assert all(_confinement(pid) == _confinement(box["pid"]) for pid in pids)
        # Its own Landlock domain: it cannot inspect the agent (nor the agent it).
        denied = kernel.exec(box["name"], "readlink /proc/1/ns/pid") if box["sandboxed"] else None
        assert denied is None or denied.exit_code != 0
    finally:
        kernel.exec_signal(handle["id"], "KILL")
        kernel.exec_wait(handle["id"])


def _confinement(pid: int) -> dict[str, Any]:
    """What a process holds, read from the host."""
    with open(f"/proc/{pid}/status") as f:
        status = [line for line in f if line.split(":")[0] in
                  ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                   "Seccomp", "Seccomp_filters")]
    namespaces = {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("pid", "mnt", "net", "uts", "ipc", "cgroup",
                                                                   "user")}
    with open(f"/proc/{pid}/cgroup") as f:
        cgroup = f.read()
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = len(f.readlines())
    return {"status": status, "namespaces": namespaces, "cgroup": cgroup, "mounts": mounts}


def test_a_terminal(kernel: Client, box: dict[str, Any]) -> None:
    stream = kernel.exec_stream(box["name"], "stty size; test -t 0 && echo tty", pty=(30, 100))
    output = b"".join(data for _, data in stream)
    assert output.replace(b"\r", b"") == b"30 100\ntty\n"
    handle = kernel.exec_start(box["name"], "read line; stty size", pty=(24, 80), stdin_open=True)
    kernel.exec_resize(handle["id"], 50, 132)
    kernel.exec_input(handle["id"], "go\n")
    result = kernel.exec_wait(handle["id"])
    assert result.exit_code == 0 and b"50 132" in result.stdout


@pytest.mark.parametrize("request_, field", [
    ({"argv": ["/bin/true"], "cmd": "true"}, "argv"),
    ({}, "argv"),
    ({"argv": ["/no/such/program"]}, "argv"),
    ({"argv": ["/bin/true"], "cwd": "/no/such/dir"}, "cwd"),
    ({"argv": ["/bin/true"], "env": {"AGENTOS_AGENT_ID": "x"}}, "env.AGENTOS_AGENT_ID"),
    ({"argv": ["/bin/true"], "stdin_base64": "not base64!"}, "stdin_base64"),
    ({"argv": ["/bin/true"], "stdin": "a", "stdin_base64": "YQ=="}, "stdin"),
    ({"argv": ["/bin/true"], "timeout": 0}, "timeout"),
    ({"argv": ["/bin/true"], "pty": {"rows": 0}}, "pty.rows"),
    ({"argv": "true"}, "argv"),
])
def test_malformed_fields_are_named(kernel: Client, box: dict[str, Any], request_: dict[str, Any],
                                    field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        kernel._call(0x16, {"id": box["id"], **request_})
    assert caught.value.details.get("field") == field


def test_unknown_handles(kernel: Client, box: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        kernel.exec_input("0123456789abcdef", "x")
    with pytest.raises(NotFound):
        kernel.exec("no-such-agent", ["/bin/true"])


def test_nothing_leaks(shared_kernel: KernelProcess, kernel: Client, box: dict[str, Any]) -> None:
    assert shared_kernel.proc is not None
    kernel.exec(box["name"], ["/bin/true"])
    before = len(os.listdir(f"/proc/{shared_kernel.pid}/fd"))
    pids = []
    for _ in range(5):
        result = kernel.exec(box["name"], "echo $$")
        pids.append(result.info["pid"])
        handle = kernel.exec_start(box["name"], ["/bin/sleep", "100000"])
        kernel.exec_signal(handle["id"], "KILL")
        kernel.exec_wait(handle["id"])
    kernel.exec_list()  # a round trip: every exec above has been reaped
    assert len(os.listdir(f"/proc/{shared_kernel.pid}/fd")) == before
    assert _only_the_agent_left(box)
    children = [p for p in os.listdir("/proc") if p.isdigit() and pid_alive(int(p))
                and _ppid(int(p)) == shared_kernel.pid]
    assert all(_cmd(int(p)) != "sh" for p in children)


def _status(kernel: Client, box: dict[str, Any], exec_id: str) -> str:
    return next(ex["status"] for ex in kernel.exec_list(box["name"]) if ex["id"] == exec_id)


def _only_the_agent_left(box: dict[str, Any], limit: float = 30.0) -> bool:
    """Whether the agent's cgroup leaf soon holds the agent alone (SIGKILLed processes take a
    moment to leave it; the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit
    while cgroup_procs(box["pid"]) != [box["pid"]]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def cgroup_procs(pid: int) -> list[int]:
    """The processes of ``pid``'s cgroup (its pids hierarchy on v1), as the host sees them."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "pids") or "pids" in controllers.split(","):
            root = "/sys/fs/cgroup" if controllers == "" else "/sys/fs/cgroup/pids"
            with open(f"{root}{path}/cgroup.procs") as f:
                return [int(p) for p in f.read().split()]
    raise AssertionError("no cgroup")


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_the_cli(shared_kernel: KernelProcess, box: dict[str, Any]) -> None:
    base = [sys.executable, "-m", "agentos", "exec", "--socket", str(shared_kernel.socket_path)]
    ran = subprocess.run([*base, box["name"], "--", "sh", "-c", "echo out; echo err >&2; exit 5"],
                         capture_output=True, timeout=120)
    assert (ran.returncode, ran.stdout, ran.stderr) == (5, b"out\n", b"err\n")
    piped = subprocess.run([*base, "-i", "-e", "X=y", box["name"], "--", "sh", "-c", "tr a-z A-Z; echo $X"],
                           input=b"hello\n", capture_output=True, timeout=120)
    assert (piped.returncode, piped.stdout) == (0, b"HELLO\ny\n")
    stopped = subprocess.run([*base, "--timeout", "0.3", box["name"], "--", "sleep", "100000"],
                             capture_output=True, timeout=120)
    assert stopped.returncode == 124
