"""``agentos stop``, ``start`` and ``restart`` against a real kernel, as the CLI runs them."""
from __future__ import annotations

import re
from pathlib import Path

from agentos.cli.main import main
from agentos.manifest import load
from agentos.protocol import Op

MANIFEST = """\
agents:
  echo:
    script: echo.py
    env: {GREETING: hello}
    sandbox: {enabled: false}
    limits: {memory: unlimited, cpu: unlimited, pids: unlimited}
    restart: {policy: always, backoff: 20ms}
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_stop_start_restart(kernel, tmp_path: Path, capsys) -> None:
    (tmp_path / "echo.py").write_text("import os, time\nprint(os.environ['GREETING'], flush=True)\ntime.sleep(300)\n")
    (tmp_path / "team.yaml").write_text(MANIFEST)
    socket = ["--socket", str(kernel.socket_path)]
    client = kernel.client()
    first = client._call(Op.SPAWN, load(tmp_path / "team.yaml").agents[0].to_spawn_request())

    assert cli(capsys, "stop", *socket, "--grace", "5s", "echo") == (0, f"echo ({first['id']}) stopped: killed\n", "")
    assert client.hello()["capabilities"]["supervisor"]["restarting"] == []
    assert [a["status"] for a in client.list_agents(name="echo")] == ["killed"]
    assert cli(capsys, "stop", *socket, "echo") == (0, f"echo ({first['id']}) was not running: killed\n", "")

    code, out, _ = cli(capsys, "start", *socket, "echo")
    started = re.fullmatch(r"echo \((\w+)\) started: pid (\d+)\n", out)
    assert code == 0 and started is not None
    [running] = client.list_agents(name="echo", status="running")
    assert running["id"] == started[1] and running["argv"] == first["argv"]
    assert "hello" in next(iter(client.follow_logs(id=running["id"])))
    assert cli(capsys, "start", *socket, "echo") == (0, f"echo ({running['id']}) already running: pid "
                                                        f"{running['pid']}\n", "")

    code, out, _ = cli(capsys, "restart", *socket, "--grace", "5s", "echo")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"echo ({running['id']}) stopped: killed"
    assert re.fullmatch(r"echo \((\w+)\) started: pid \d+", lines[1]) and running["id"] not in lines[1]
    assert len(client.list_agents(name="echo", status="running")) == 1


def test_start_after_the_kernel_forgot_needs_the_manifest(kernel, tmp_path: Path, capsys) -> None:
    (tmp_path / "echo.py").write_text("import time\ntime.sleep(300)\n")
    (tmp_path / "team.yaml").write_text(MANIFEST)
    socket = ["--socket", str(kernel.socket_path)]
    code, out, err = cli(capsys, "start", *socket, "echo")
    assert (code, out) == (2, "") and err == (
        "agentos start: error: no agent named 'echo'; the kernel forgets ended agents at a restart and past "
        "processes.keep_ended: `agentos start echo -f MANIFEST` starts it as its manifest declares it\n")
    code, out, _ = cli(capsys, "start", *socket, "echo", "-f", str(tmp_path / "team.yaml"))
    assert code == 0 and re.fullmatch(r"echo \(\w+\) started: pid \d+\n", out)
    code, out, _ = cli(capsys, "restart", *socket, "--grace", "5s", "echo", "-f", str(tmp_path / "team.yaml"))
    assert code == 0 and [line.split(")")[1] for line in out.splitlines()][0] == " stopped: killed"
    code, out, err = cli(capsys, "start", *socket, "ghost", "-f", str(tmp_path / "team.yaml"))
    assert (code, err) == (2, f"agentos start: error: {tmp_path / 'team.yaml'} declares no agent 'ghost' "
                              "(it declares echo)\n")
    kernel.client().kill("echo", grace=5)
