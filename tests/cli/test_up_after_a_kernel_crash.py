"""``agentos up -d``, the kernel SIGKILLed, then ``up -d`` again (or a plain ``agentos kernel``):
the team's restart-policy agents are back once, never twice; the others are ``lost``."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from agentos import Client
from agentos.cli.launch import stop_kernel_pid
from agentos.manifest import project_name
from agentos.testing.kernel import KernelProcess

from .test_up import agentos, lines, manifest

WORKER = """\
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(os.environ["AGENTOS_AGENT_ID"] + "\\n")
print("working", flush=True)
while True:
    time.sleep(60)
"""

TEAM = """\
keeper:
  script: worker.py
  args: [{root}/keeper.starts]
  PLAIN
  restart: {policy: always, backoff: 20ms}
plain:
  script: worker.py
  args: [{root}/plain.starts]
  PLAIN
"""


def starts(project: Path, name: str) -> list[str]:
    try:
        return (project / f"{name}.starts").read_text().split()
    except FileNotFoundError:
        return []


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def crash(socket: Path, started: int) -> None:
    """SIGKILL the kernel on ``socket`` (HELLO's pid: ``started``, what up started, may be its
    guardian) and wait until both are gone."""
    with Client(socket) as client:
        kernel = int(client.hello()["pid"])
    os.kill(kernel, signal.SIGKILL)
    for pid in {kernel, started}:
        wait_for(f"pid {pid} to end", lambda pid=pid: gone(pid))


def kernel_pid(output: str) -> int:
    found = re.search(r"started a kernel \(pid (\d+)\)", output)
    assert found is not None, output
    return int(found[1])


def up_team(tmp_path: Path, pids: list[int]) -> Path:
    """``agentos up -d`` of TEAM in ``tmp_path`` (its kernel's pid added to ``pids``), once both
    agents work; returns the manifest's path."""
    (tmp_path / "worker.py").write_text(WORKER)
    path = manifest(tmp_path, TEAM.replace("{root}", str(tmp_path)))
    up = agentos("up", "-d", path.name, cwd=tmp_path)
    assert up.returncode == 0, up
    pids.append(kernel_pid(up.stdout))
    wait_for("the team to work", lambda: starts(tmp_path, "keeper") and starts(tmp_path, "plain"))
    return path


def test_up_after_a_kernel_sigkill_finds_its_team_restored_and_starts_only_the_rest(tmp_path: Path) -> None:
    socket = tmp_path / "run" / "k.sock"
    pids: list[int] = []
    plain_kernel = KernelProcess(tmp_path / "run")
    try:
        path = up_team(tmp_path, pids)
        [old_plain] = starts(tmp_path, "plain")
        crash(socket, pids[-1])

        again = agentos("up", "-d", path.name, cwd=tmp_path)
        assert again.returncode == 0, again
        pids.append(kernel_pid(again.stdout))
        output = lines(again.stdout)
        # The kernel restored keeper before it took up's connection: up adopts it, starts only plain.
        assert any(re.fullmatch(r"keeper +\| already running \(pid \d+\)", line) for line in output), output
        assert any(re.fullmatch(r"plain +\| started \(pid \d+\)", line) for line in output), output
        with Client(socket) as client:
            running = client.list_agents(status="running")
            assert sorted(a["name"] for a in running) == ["keeper", "plain"]
            ids = {a["name"]: a["id"] for a in running}
            assert {a["id"] for a in client.list_agents(status="lost")} == {starts(tmp_path, "keeper")[0], old_plain}
        wait_for("keeper to work again", lambda: starts(tmp_path, "keeper")[1:] == [ids["keeper"]])
        wait_for("plain to work again", lambda: starts(tmp_path, "plain")[1:] == [ids["plain"]])
        crash(socket, pids[-1])

        # A plain `agentos kernel` on the same state dir brings keeper back too; plain, started
        # without a restart policy, is lost.
        plain_kernel.start()
        client = plain_kernel.client()
        [keeper] = client.list_agents(status="running")
        assert (keeper["name"], keeper["project"]) == ("keeper", project_name(tmp_path.name))
        wait_for("keeper to work a third time", lambda: starts(tmp_path, "keeper")[2:] == [keeper["id"]])
        assert ids["plain"] in {a["id"] for a in client.list_agents(name="plain", status="lost")}
        plain_kernel.stop_checked()
    finally:
        plain_kernel.stop()
        for pid in pids:
            stop_kernel_pid(pid, timeout=10)


def test_down_while_no_kernel_runs_keeps_the_next_kernel_from_restoring_the_team(tmp_path: Path) -> None:
    socket = tmp_path / "run" / "k.sock"
    pids: list[int] = []
    plain_kernel = KernelProcess(tmp_path / "run")
    try:
        path = up_team(tmp_path, pids)
        crash(socket, pids[-1])

        down = agentos("down", path.name, cwd=tmp_path)
        assert down.returncode == 0, down
        assert "will not be restored" in down.stdout, down.stdout

        plain_kernel.start()
        client = plain_kernel.client()
        assert client.list_agents(status="running") == []
        assert {a["name"] for a in client.list_agents(status="lost")} == {"keeper", "plain"}
        assert len(starts(tmp_path, "keeper")) == 1, "keeper was brought back"
        plain_kernel.stop_checked()
    finally:
        plain_kernel.stop()
        for pid in pids:
            stop_kernel_pid(pid, timeout=10)
