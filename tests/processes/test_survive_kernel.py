"""A kernel restart (SIGKILL or a clean stop) against the agent ledger: what comes back, what is lost.

Real kernels on one state dir, one after the other; the agents do real work (each start appends
its id to a file) so a restored agent is seen running, not just listed.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.cli.main import main as cli_main
from agentos.testing.kernel import KernelProcess

from .conftest import agent, pid_alive

RECORDING = [sys.executable, str(Path(__file__).with_name("recording_kernel.py"))]

#: Appends ``<agent id> <pid>`` to the file its first argument names, says so, then works on.
WORKER = """\
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.environ['AGENTOS_AGENT_ID']} {os.getpid()}\\n")
print(f"working as {os.environ['AGENTOS_AGENT_ID']}", flush=True)
while True:
    time.sleep(60)
"""

ALWAYS = {"policy": "always", "backoff": 0.05}
ON_FAILURE = {"policy": "on-failure", "backoff": 0.05}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it answers something truthy (a wait, never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Team:
    """Workers in project ``team``, each logging its starts to ``<name>.starts`` under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.script = root / "worker.py"
        self.script.write_text(WORKER)

    def spawn(self, client: Client, name: str, restart: dict[str, Any] | None = None) -> dict[str, Any]:
        info = client.spawn(name, self.script, args=[str(self.starts_file(name))], sandboxed=False,
                            restart=restart, project="team")
        wait_for(f"{name} to start", lambda: info["id"] in self.starts(name))
        return info

    def starts_file(self, name: str) -> Path:
        return self.root / f"{name}.starts"

    def starts(self, name: str) -> list[str]:
        """The ids of every process of ``name`` that started, in order."""
        try:
            return [line.split()[0] for line in self.starts_file(name).read_text().splitlines()]
        except FileNotFoundError:
            return []


@pytest.fixture
def kernel_on(tmp_path: Path) -> Iterator[Callable[[], KernelProcess]]:
    """Start recording kernels on one root (socket, state dir, log); every one is stopped at the end."""
    started: list[KernelProcess] = []

    def start() -> KernelProcess:
        k = KernelProcess(tmp_path / "k", command=RECORDING, env={"AGENTOS_TEST_EVENTS": str(events_path(tmp_path))})
        started.append(k)
        return k.start()

    try:
        yield start
    finally:
        for k in started:
            k.stop()


def events_path(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


def events(tmp_path: Path, topic: str) -> list[dict[str, Any]]:
    try:
        lines = events_path(tmp_path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [event for event in map(json.loads, lines) if event["topic"] == topic]


def by_name(client: Client) -> dict[str, list[dict[str, Any]]]:
    """Every process the kernel lists, by agent name, oldest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for info in sorted(client.list_agents(), key=lambda a: a["started_at"]):
        found.setdefault(info["name"], []).append(info)
    return found


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(list(args))
    out, _ = capsys.readouterr()
    return code, out


def test_after_a_sigkill_the_restart_policy_agents_come_back_and_the_rest_are_lost(
        kernel_on: Callable[[], KernelProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    team = Team(tmp_path)
    first = kernel_on()
    client = first.client()
    keeper = team.spawn(client, "keeper", ALWAYS)
    fixer = team.spawn(client, "fixer", ON_FAILURE)
    plain = team.spawn(client, "plain")
    stopped = team.spawn(client, "stopped", ALWAYS)
    client.kill("team/stopped")
    # A restart-policy agent that spawned a child of its own: the child is its business.
    boss = client.spawn("boss", agent("spawner"), restart=ALWAYS, project="team", capabilities=["spawn"])
    wait_for("boss's child", lambda: [a for a in client.list_agents(status="running")
                                      if a["name"] == "child-of-boss"])
    [old_child] = client.list_agents(name="team/child-of-boss")
    first.kill()

    second = kernel_on()
    client = second.client()
    agents = by_name(client)
    for name, old in (("keeper", keeper), ("fixer", fixer), ("boss", boss)):
        [was, now] = agents[name]
        assert (was["id"], was["status"], was["exit_code"]) == (old["id"], "lost", None)
        assert now["status"] == "running" and now["project"] == "team" and now["id"] != old["id"]
        assert now["restarts"] == 1
    assert [(a["id"], a["status"]) for a in agents["plain"]] == [(plain["id"], "lost")]
    assert [(a["id"], a["status"], a["reason"]) for a in agents["stopped"]] == [(stopped["id"], "killed", "kill")]
    # The restored agents work: each started once more, as the process now listed.
    for name in ("keeper", "fixer"):
        wait_for(f"{name} to work again", lambda name=name: len(team.starts(name)) == 2)  # type: ignore[misc]
        assert team.starts(name)[1] == agents[name][1]["id"]
    # The old child is lost, not restored by the kernel; the restored boss spawned its own again.
    new_boss = agents["boss"][1]["id"]
    children = wait_for("the restored boss's child", lambda: [
        a for a in client.list_agents(name="team/child-of-boss") if a["status"] == "running"])
    assert [(c["parent"], c["restarts"]) for c in children] == [(new_boss, 0)]
    assert [a["status"] for a in client.list_agents(name="team/child-of-boss") if a["id"] == old_child["id"]] \
        == ["lost"]
    # Nothing of the dead kernel's agents runs any more.
    for old in (keeper, fixer, plain, boss, old_child):
        wait_for(f"pid {old['pid']} to be gone", lambda old=old: not pid_alive(old["pid"]))  # type: ignore[misc]

    lost = {e["id"]: e for e in events(tmp_path, "agent.lost")}
    assert set(lost) == {plain["id"], old_child["id"]}
    assert (lost[plain["id"]]["name"], lost[plain["id"]]["project"], lost[plain["id"]]["status"]) == \
        ("plain", "team", "lost")
    restored = {e["name"]: e for e in events(tmp_path, "agent.restored")}
    assert {name: (e["previous_id"], e["previous_status"], e["id"]) for name, e in restored.items()} == {
        name: (old["id"], "lost", agents[name][1]["id"])
        for name, old in (("keeper", keeper), ("fixer", fixer), ("boss", boss))}
    log = second.log()
    assert f"agent team/plain ({plain['id']}) lost" in log
    assert f"agent team/keeper ({keeper['id']}, lost under the previous kernel) restored as " \
           f"{agents['keeper'][1]['id']}" in log

    # The lost agent's output is read from its file, by name, through the SDK and the CLI.
    assert f"working as {plain['id']}" in client.logs("team/plain")
    socket = ["--socket", str(second.socket_path)]
    code, out = cli(capsys, "logs", *socket, "plain")
    assert code == 0 and f"working as {plain['id']}" in out
    code, out = cli(capsys, "ps", *socket)
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows["plain"][4] == "lost" and rows["keeper"][4] == "running"
    assert {a["id"] for a in client.list_agents(status="lost")} == {
        keeper["id"], fixer["id"], plain["id"], boss["id"], old_child["id"]}
    # START brings a lost agent back by hand, from its remembered request.
    started = client.start("team/plain")
    assert started["started"] is True
    wait_for("plain to work again", lambda: team.starts("plain")[1:] == [started["id"]])
    second.stop_checked()


def test_a_clean_stop_brings_back_the_restart_policy_agents_and_shows_the_rest_killed(
        kernel_on: Callable[[], KernelProcess], tmp_path: Path) -> None:
    team = Team(tmp_path)
    first = kernel_on()
    client = first.client()
    keeper = team.spawn(client, "keeper", ALWAYS)
    plain = team.spawn(client, "plain")
    first.stop_checked()

    second = kernel_on()
    client = second.client()
    agents = by_name(client)
    [was, now] = agents["keeper"]
    assert (was["id"], was["status"], was["reason"]) == (keeper["id"], "killed", "shutdown")
    assert now["status"] == "running"
    wait_for("keeper to work again", lambda: team.starts("keeper")[1:] == [now["id"]])
    assert [(a["id"], a["status"], a["reason"]) for a in agents["plain"]] == [(plain["id"], "killed", "shutdown")]
    assert f"working as {plain['id']}" in client.logs("team/plain")
    assert events(tmp_path, "agent.lost") == []
    assert [(e["previous_id"], e["previous_status"]) for e in events(tmp_path, "agent.restored")] == \
        [(keeper["id"], "killed")]

    # Stopped on purpose, it stays stopped across the next restart; the history stays too.
    client.kill("team/keeper")
    second.stop_checked()
    third = kernel_on()
    client = third.client()
    assert client.list_agents(status="running") == []
    assert [a["status"] for a in by_name(client)["keeper"]] == ["killed", "killed"]
    third.stop_checked()


def test_an_agent_the_supervisor_gave_up_on_is_not_restored(
        kernel_on: Callable[[], KernelProcess], tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text("import sys\nprint('crashing', flush=True)\nsys.exit(3)\n")
    first = kernel_on()
    client = first.client()
    crasher = client.spawn("crasher", tmp_path / "crash.py", sandboxed=False, project="team",
                           restart={"policy": "on-failure", "max_restarts": 1, "backoff": 0.01})
    wait_for("the supervisor to give up", lambda: events(tmp_path, "agent.given_up"))
    first.kill()

    second = kernel_on()
    client = second.client()
    processes = by_name(client)["crasher"]
    assert [a["status"] for a in processes] == ["failed", "failed"] and processes[0]["id"] == crasher["id"]
    assert client.list_agents(status="running") == []
    assert events(tmp_path, "agent.restored") == []
    second.stop_checked()


@pytest.mark.parametrize("tamper", ["writable", "foreign"])
def test_a_ledger_another_user_could_have_written_is_set_aside_unread(
        kernel_on: Callable[[], KernelProcess], tmp_path: Path, tamper: str) -> None:
    team = Team(tmp_path)
    first = kernel_on()
    keeper = team.spawn(first.client(), "keeper", ALWAYS)
    first.stop_checked()
    ledger = first.state_dir / "agents.db"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    if tamper == "writable":
        ledger.chmod(0o666)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root: giving the ledger to another uid")
        os.chown(ledger, 65534, 65534)

    second = kernel_on()
    client = second.client()
    assert client.list_agents() == []
    assert team.starts("keeper") == [keeper["id"]]
    assert "not trusted" in second.log()
    [aside] = [p for p in first.state_dir.iterdir() if p.name.startswith("agents.db.refused-")]
    assert aside.stat().st_uid == (65534 if tamper == "foreign" else os.geteuid())
    # A fresh ledger, private, records this kernel's agents.
    team.spawn(client, "again", ALWAYS)
    second.stop_checked()
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600 and ledger.stat().st_uid == os.geteuid()
    third = kernel_on()
    assert [a["name"] for a in third.client().list_agents(status="running")] == ["again"]
    third.stop_checked()


def test_a_second_kernel_on_the_same_state_dir_leaves_the_first_ones_agents_alone(
        kernel_on: Callable[[], KernelProcess], tmp_path: Path) -> None:
    team = Team(tmp_path)
    first = kernel_on()
    keeper = team.spawn(first.client(), "keeper", ALWAYS)
    # Its own socket, the first one's state dir (the last --state-dir is the one taken).
    second = KernelProcess(tmp_path / "second", args=["--state-dir", str(first.state_dir)]).start()
    try:
        assert second.client().list_agents() == []
        assert "of a kernel still running on this state dir" in second.log()
    finally:
        second.stop_checked()
    assert pid_alive(keeper["pid"])
    assert [a["id"] for a in first.client().list_agents(status="running")] == [keeper["id"]]
    first.stop_checked()
