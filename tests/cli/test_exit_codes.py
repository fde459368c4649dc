"""What the CLI's exit status and its output streams promise: Ctrl-C is 130 for every command that
runs until interrupted (`up`, `logs -f`, `top`), and a reader that goes away never stops a team."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentos import Client
from agentos.testing.kernel import KernelProcess

PLAIN = ["--no-sandbox", "--memory", "unlimited", "--cpu", "unlimited", "--pids", "unlimited"]
SERVE = """\
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving", flush=True)
    while True:
        time.sleep(1)
    """


def environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}


def interrupted(argv: list[str], first_line: str, cwd: Path) -> tuple[int, str, str]:
    """Run ``agentos ARGV`` until it prints a line starting ``first_line``, then Ctrl-C it (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-m", "agentos", *argv], cwd=cwd, env=environ(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(first_line):
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen) + rest, err


@pytest.mark.parametrize("command", ["top", "logs"])
def test_ctrl_c_ends_top_and_logs_follow_with_130(kernel: KernelProcess, tmp_path: Path, command: str) -> None:
    (tmp_path / "serve.py").write_text(textwrap.dedent(SERVE))
    socket = ["--socket", str(kernel.socket_path)]
    spawned = subprocess.run([sys.executable, "-m", "agentos", "spawn", *socket, *PLAIN, "--name", "serve",
                              str(tmp_path / "serve.py")], env=environ(), capture_output=True, text=True,
                             check=False)
    assert spawned.returncode == 0, spawned
    argv, first = (["top", *socket, "--interval", "1h"], "agentos ") if command == "top" else \
        (["logs", "-f", *socket, "serve"], "serving")
    code, out, err = interrupted(argv, first, tmp_path)
    assert code == 130, (out, err)
    assert "Traceback" not in err, err
    # Only the CLI was interrupted: the agent runs on.
    assert [a["name"] for a in kernel.client().list_agents(status="running")] == ["serve"]
    kernel.client().kill("serve", grace=5)


def test_a_closed_stdout_never_stops_a_detached_team(tmp_path: Path) -> None:
    """`agentos up -d FILE | head -1`: the reader leaves after the first line, and every later line
    `up` prints hits EPIPE; the team and the kernel started for it stay up until `down`."""
    gate = tmp_path / "go"
    (tmp_path / "gated.py").write_text(textwrap.dedent(f"""\
        import pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.02)
        print("listening", flush=True)
        while True:
            time.sleep(1)
        """))
    (tmp_path / "team.yaml").write_text(textwrap.dedent("""\
        kernel: {socket: ./run/k.sock, state_dir: ./run/state}
        agents:
          gated:
            script: gated.py
            sandbox: {enabled: false}
            limits: {memory: unlimited, cpu: unlimited, pids: unlimited}
            readiness: {kind: log-line, pattern: listening}
          after:
            script: gated.py
            sandbox: {enabled: false}
            limits: {memory: unlimited, cpu: unlimited, pids: unlimited}
            depends_on: [gated]
        """))
    proc = subprocess.Popen([sys.executable, "-m", "agentos", "up", "-d", "team.yaml"], cwd=tmp_path,
                            env=environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("started a kernel (pid "), first
        # As `head -1` does: gone after one line, before `up` prints the rest.
        proc.stdout.close()
        gate.touch()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    kernel_pid = int(first.split("(pid ", 1)[1].split(")", 1)[0])
    try:
        assert proc.returncode == 0, err
        assert b"Traceback" not in err and b"Broken pipe" not in err, err
        with Client(tmp_path / "run" / "k.sock") as client:
            assert sorted(a["name"] for a in client.list_agents(status="running")) == ["after", "gated"]
            assert client.hello()["pid"] == kernel_pid
    finally:
        down = subprocess.run([sys.executable, "-m", "agentos", "down", "team.yaml"], cwd=tmp_path,
                              env=environ(), capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down
    assert f"stopped the kernel (pid {kernel_pid})" in down.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(kernel_pid, 0)
