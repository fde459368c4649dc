"""The process examples run against a real kernel, as documented."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "agents" / "examples"


def test_spawn_test_example(kernel, sandboxed) -> None:
    args = [] if sandboxed else ["--unsandboxed"]
    env = {**os.environ, "AGENTOS_SOCKET": str(kernel.socket_path)}
    env.pop("AGENTOS_FD", None)
    done = subprocess.run([sys.executable, str(EXAMPLES / "spawn_test.py"), "--beats", "2", *args],
                          check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "heartbeat 2" in done.stdout
    assert "killed: status=killed" in done.stdout
    assert '"degraded": []' in done.stdout
    [worker] = kernel.client().list_agents(name="worker")
    assert worker["status"] == "killed"
    # The worker said goodbye on SIGTERM, before any SIGKILL.
    assert "worker stopping" in kernel.client().logs(id=worker["id"])
