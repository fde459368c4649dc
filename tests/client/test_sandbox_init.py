"""EXEC into a sandbox served by agentos-init (its pid 1, sandbox/initd.py): the same results as
the zygote's way, from both clients; init reaps what an exec's killed leader leaves; a sandbox
whose init dies ends, with its execs."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import AsyncClient, Client, InvalidArgument
from agentos.testing.kernel import KernelProcess

from .test_sandbox import eventually


@pytest.fixture(scope="module")
def kernel_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    k = KernelProcess(tmp_path_factory.mktemp("sandbox-init") / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def client(kernel_process: KernelProcess) -> Client:
    return kernel_process.client(timeout=60)


class _Blocking:
    """An ``AsyncClient`` (or its sandbox) called like the blocking one, on one loop."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if not callable(method):
            return method  # a property: ``isolation``, ``info``

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call


def _exec_the_sandbox(kernel: Any, sb: Any) -> None:
    """Every EXEC feature through init, written once for both clients."""
    assert sb.isolation["sandbox"]["init"] == "agentos-init"
    # The command's parent is its exec's leader, whose parent is the sandbox's pid 1: init.
    leaders_parent, init = sb.exec("cut -d' ' -f4 /proc/$PPID/stat; tr '\\0' ' ' </proc/1/cmdline").stdout.split()[:2]
    assert leaders_parent == b"1" and init.endswith(b"/agentos-init")
    result = sb.exec("echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code, result.signal) == (b"out\n", b"err\n", 3, None)
    assert sb.exec(["cat"], stdin=b"fed\n").stdout == b"fed\n"
    killed = sb.exec("kill -TERM $$")
    assert (killed.exit_code, killed.signal) == (None, signal.SIGTERM)
    seen = sb.exec("echo $FOO; pwd; env | grep -c AGENTOS_FD || true", env={"FOO": "bar"}, cwd="/tmp")
    assert seen.stdout == b"bar\n/tmp\n0\n"
    late = sb.exec("sleep 1000 & sleep 1000", timeout=0.5)
    assert late.timed_out and late.signal == signal.SIGKILL
    assert eventually(lambda: sb.exec("grep -l '^Name:.*sleep' /proc/[0-9]*/status || true").stdout == b"")
    handle = sb.exec_start("read line; stty size; test -t 0 && echo tty", pty=(24, 80), stdin_open=True)
    assert 1 < handle["pid"] < 100  # the command's pid in the sandbox
    kernel.exec_resize(handle["id"], 50, 132)
    kernel.exec_input(handle["id"], "go\n")
    on_terminal = kernel.exec_wait(handle["id"])
    assert on_terminal.exit_code == 0 and on_terminal.stdout.replace(b"\r", b"").endswith(b"50 132\ntty\n")
    trapping = sb.exec_start(["sh", "-c", "trap 'echo got; exit 7' USR1; touch /tmp/trapping; "
                                          "while :; do sleep 0.02; done"])
    assert eventually(lambda: sb.exec("test -e /tmp/trapping").exit_code == 0)
    assert kernel.exec_signal(trapping["id"], "USR1", group=False)["delivered"]
    ended = kernel.exec_wait(trapping["id"])
    assert (ended.exit_code, b"got" in ended.stdout) == (7, True)
    for request, field in ((["/no/such/program"], "argv"), (["true"], "cwd")):
        with pytest.raises(InvalidArgument) as refused:
            sb.exec(request, cwd="/no/such/dir" if field == "cwd" else None)
        assert refused.value.details.get("field") == field


def test_exec_through_init_from_the_blocking_client(client: Client) -> None:
    with client.sandbox() as sb:
        _exec_the_sandbox(client, sb)


def test_exec_through_init_from_the_async_client(kernel_process: KernelProcess) -> None:
    loop = asyncio.new_event_loop()
    try:
        aclient = loop.run_until_complete(AsyncClient.connect(kernel_process.socket_path, timeout=60))
        sb = loop.run_until_complete(aclient.sandbox().start())
        try:
            _exec_the_sandbox(_Blocking(aclient, loop), _Blocking(sb, loop))
        finally:
            loop.run_until_complete(sb.kill())
            loop.run_until_complete(aclient.close())
    finally:
        loop.close()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _host_pid_of(argv: bytes) -> int:
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == argv:
                return int(entry.name)
        except OSError:
            continue
    return 0


def test_init_reaps_what_a_killed_leader_leaves(client: Client) -> None:
    with client.sandbox() as sb:
        init = sb.info["pid"]
        handle = sb.exec_start("setsid sleep 1001 & exec sleep 1002")
        assert eventually(lambda: _host_pid_of(b"sleep\x001001\x00") and _host_pid_of(b"sleep\x001002\x00"))
        [leader] = _children(init)
        os.kill(leader, signal.SIGKILL)  # the exec's leader dies without cleaning up
        assert client.exec_wait(handle["id"]).signal == signal.SIGKILL
        # Its group (the command) was killed by init; the daemon that left the group is init's now.
        assert eventually(lambda: _host_pid_of(b"sleep\x001002\x00") == 0)
        daemon = _host_pid_of(b"sleep\x001001\x00")
        # The command is gone from the table once init has reaped it: a zombie a moment before.
        assert eventually(lambda: _children(init) == [daemon])
        os.kill(daemon, signal.SIGKILL)
        assert eventually(lambda: _children(init) == [])  # reaped: no zombie under pid 1
        assert sb.exec("echo alive").stdout == b"alive\n"


def test_a_sandbox_whose_init_dies_ends_with_its_execs(client: Client) -> None:
    sb = client.sandbox().start()
    handle = sb.exec_start(["sleep", "1003"])
    assert eventually(lambda: _host_pid_of(b"sleep\x001003\x00"))
    os.kill(sb.info["pid"], signal.SIGKILL)  # as a crash of init would
    ended = client.wait(id=sb.id, timeout=30)
    assert (ended["status"], ended["signal"]) == ("failed", signal.SIGKILL)
    assert client.exec_wait(handle["id"]).signal == signal.SIGKILL
    assert _host_pid_of(b"sleep\x001003\x00") == 0
