"""Another local user (a login on the same host, not the kernel's uid) gets nothing of the
kernel's: no connection, no state, no agent logs, no environment (where the LLM key is)."""
from __future__ import annotations

import errno
import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentos import Client, SyscallError

from .conftest import HostileKernel, Users, as_user, hostile_kernel_in


def _errno_of(fn: Callable[[], Any]) -> str:
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def _connect(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(1)


@pytest.fixture(scope="module")
def kernel_with_history(hostile: HostileKernel) -> HostileKernel:
    """The kernel has run an agent (so it has logs) and stored a value."""
    hostile.attack("victim", "a line for the log", "0")
    hostile.admin.store("secret", "stored value")
    return hostile


def _kernel_files(kernel: HostileKernel) -> list[str]:
    """Every file the kernel made in its state dir (read as root, the test's view)."""
    return [os.path.join(d, f) for d, _, files in os.walk(kernel.process.state_dir) for f in files]


def test_another_user_cannot_connect(kernel_with_history: HostileKernel, users: Users) -> None:
    outcome = as_user(users.attacker, lambda: _errno_of(lambda: _connect(str(kernel_with_history.process.socket_path))))
    assert outcome == "EACCES"


def test_another_user_cannot_read_state_or_logs(kernel_with_history: HostileKernel, users: Users) -> None:
    state_dir = str(kernel_with_history.process.state_dir)
    files = _kernel_files(kernel_with_history)
    assert any("/logs/" in f for f in files) and files

    def attack() -> dict[str, str]:
        found = {state_dir: _errno_of(lambda: os.listdir(state_dir))}
        found.update({f: _errno_of(functools.partial(_read, f)) for f in files})
        return found

    assert set(as_user(users.attacker, attack).values()) == {"EACCES"}


def test_another_user_cannot_read_the_kernels_environment(kernel_with_history: HostileKernel, users: Users) -> None:
    environ = f"/proc/{kernel_with_history.pid}/environ"
    assert as_user(users.attacker, lambda: _errno_of(lambda: _read(environ))) == "EACCES"


def test_another_user_on_a_world_reachable_socket_is_refused_and_cannot_crash_it(kernel_mode: str, users: Users,
                                                                                 scripts: Path) -> None:
    """With the socket opened to everyone (mode 666), the kernel's own checks decide: the
    other user is refused (no permissions section lists it), and cannot bring the kernel down."""
    with hostile_kernel_in(kernel_mode, users, scripts, args=["--socket-mode", "666"]) as kernel:
        def hello() -> str:
            try:
                with Client(kernel.process.socket_path, timeout=30) as client:
                    return f"served as {client.hello()['you']}"
            except SyscallError as exc:
                return exc.code.value
        assert as_user(users.attacker, hello) == "permission_denied"
        assert kernel.alive()
