"""`agentos kernel`: socket handling, refusal of a second kernel, signals, logging."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

from agentos import Client, KernelNotRunning
from agentos.testing.kernel import KernelProcess


def _kernel_cmd(sock, state, *extra):
    return [sys.executable, "-m", "agentos", "kernel", "--socket", str(sock),
            "--state-dir", str(state), *extra]


def test_socket_is_private_by_default(kernel) -> None:
    mode = stat.S_IMODE(os.stat(kernel.socket_path).st_mode)
    assert mode == 0o600


def test_second_kernel_on_same_socket_is_refused(kernel, tmp_path) -> None:
    proc = subprocess.run(_kernel_cmd(kernel.socket_path, tmp_path / "s2"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"a live kernel already serves {kernel.socket_path}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert kernel.client().noop(b"first kernel intact") == b"first kernel intact"


def test_stale_socket_file_is_replaced(tmp_path) -> None:
    path = tmp_path / "k" / "kernel.sock"
    path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file with nobody listening: what a crashed kernel leaves
    with KernelProcess(tmp_path / "k") as k:
        assert k.client().noop(b"x") == b"x"
    assert not path.exists()


def test_non_socket_file_is_not_replaced(tmp_path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    proc = subprocess.run(_kernel_cmd(path, tmp_path / "s"), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "is not a socket" in proc.stderr
    assert path.read_text() == "precious"


def test_sigint_shuts_down_cleanly(tmp_path) -> None:
    k = KernelProcess(tmp_path / "k").start()
    client = k.client()
    assert client.noop(b"x") == b"x"
    assert k.proc is not None
    k.proc.send_signal(signal.SIGINT)
    assert k.proc.wait(60) == 0
    assert not k.socket_path.exists()
    assert "shutting down" in k.log()


def test_json_logs(tmp_path) -> None:
    with KernelProcess(tmp_path / "k", args=["--log-json"]) as k:
        k.client().hello()
    lines = [json.loads(line) for line in k.log().splitlines() if line.startswith("{")]
    assert any("listening on" in entry["msg"] for entry in lines)
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in lines)


def test_client_finds_kernel_from_env(kernel, monkeypatch) -> None:
    monkeypatch.setenv("AGENTOS_SOCKET", str(kernel.socket_path))
    monkeypatch.delenv("AGENTOS_FD", raising=False)
    with Client() as c:
        assert c.hello()["protocol"] == 1


def test_client_says_when_no_kernel_runs(tmp_path) -> None:
    with pytest.raises(KernelNotRunning, match="no agentos kernel at .*nowhere.sock"):
        Client(tmp_path / "nowhere.sock")


def test_hello_reports_identity_and_syscalls(kernel) -> None:
    info = kernel.client().hello()
    assert info["you"]["pid"] == os.getpid()
    assert info["you"]["uid"] == os.geteuid()
    assert {"NOOP", "HELLO"} <= set(info["syscalls"])
    # ``agentos kernel`` is the kernel's guardian: the kernel is its child.
    with open(f"/proc/{info['pid']}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == kernel.proc.pid
