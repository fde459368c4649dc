"""Registered names against agents' names: squatting never captures an agent's mail, and
names live in their registrant's scope. The attackers are sandboxed agents."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentos import Client, NotFound, PermissionDenied
from agentos.protocol import Op

CORRESPONDENT = str(Path(__file__).with_name("agents") / "correspondent.py")


def results(client: Client, name: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in client.logs(name).splitlines() if line.startswith("{")]
    return {line["step"]: line for line in lines}


def run_agent(client: Client, name: str, *steps: str, **spawn: Any) -> dict[str, dict[str, Any]]:
    client.spawn(name, CORRESPONDENT, args=list(steps), **spawn)
    ended = client.wait(name, timeout=60)
    assert ended["exit_code"] == 0, client.logs(name)
    return results(client, name)


def send(client: Client, to: str, body: Any) -> str:
    """The address SEND delivered to."""
    return client._call(Op.SEND, {"to": to, "body": body})["to"]


def test_a_name_registered_before_its_agent_never_captures_its_mail(kernel) -> None:
    root = kernel.client()
    squat = run_agent(root, "squatter", "register=late1")
    # Nobody called late1 exists yet: the name is the squatter's, in its scope (root's children).
    assert squat["register=late1"]["ok"] == {"name": "late1", "address": "uid:0/squatter",
                                             "scope": "uid:0"}
    root.spawn("late1", CORRESPONDENT, args=["ready", "recv=60"])
    root.wait("late1", until="ready", timeout=60)
    assert send(root, "late1", "for the real late1") == "uid:0/late1"
    assert root.wait("late1", timeout=60)["exit_code"] == 0
    assert results(root, "late1")["recv=60"]["ok"]["body"] == "for the real late1"

    kernel.restart()
    root = kernel.client()
    # late1 is not running, but its name still reaches its own mailbox, not the squatter's.
    assert send(root, "late1", "while it was down") == "uid:0/late1"
    again = run_agent(root, "squatter2", "register=late1", "send=late1")
    assert again["register=late1"]["error"] == "PermissionDenied", again
    assert again["register=late1"]["details"]["field"] == "name"
    assert again["send=late1"]["ok"]["to"] == "uid:0/late1"
    got = run_agent(root, "late1", "recv=10", "recv=11")
    assert [got["recv=10"]["ok"]["body"], got["recv=11"]["ok"]["body"]] == [
        "while it was down", {"from": "uid:0/squatter2"}]
    # The squatter's mailbox got none of it.
    leftovers = run_agent(root, "squatter", "recv=0")
    assert leftovers["recv=0"]["error"] == "Timeout"


def test_a_running_agents_name_cannot_be_registered_by_anyone_else(kernel) -> None:
    root = kernel.client()
    root.spawn("runner", CORRESPONDENT, args=["ready", "register=runner", "recv=60"])
    root.wait("runner", until="ready", timeout=60)
    squat = run_agent(root, "squatter", "register=runner")
    assert squat["register=runner"]["error"] == "PermissionDenied", squat
    assert "name of agent" in squat["register=runner"]["message"]
    # Not even an admin's global name may shadow it.
    with pytest.raises(PermissionDenied, match="name of agent"):
        root.register("runner")
    assert send(root, "runner", "mine") == "uid:0/runner"
    assert root.wait("runner", timeout=60)["exit_code"] == 0
    # The agent itself may register its own name.
    assert results(root, "runner")["register=runner"]["ok"]["address"] == "uid:0/runner"
    assert results(root, "runner")["recv=60"]["ok"]["body"] == "mine"
    # So may the same agent started again (a new id, the same principal).
    again = run_agent(root, "runner", "register=runner")
    assert again["register=runner"]["ok"]["address"] == "uid:0/runner", again


def test_two_teams_register_the_same_name_without_colliding(kernel) -> None:
    root = kernel.client()
    teams = {}
    for team in ("team-a", "team-b"):
        worker = f"{team}-db"
        teams[team] = run_agent(
            root, team, f"spawn={worker};register=db;ready;recv=60", f"await-ready={worker}",
            "send=db", f"await={worker}", capabilities=["spawn", "message"])
        assert teams[team]["send=db"]["ok"]["to"] == f"uid:0/{team}/{worker}", teams[team]
        assert teams[team][f"await={worker}"]["ok"] == 0
        worker_steps = results(root, worker)
        assert worker_steps["register=db"]["ok"] == {
            "name": "db", "address": f"uid:0/{team}/{worker}", "scope": f"uid:0/{team}"}
        assert worker_steps["recv=60"]["ok"]["body"] == {"from": f"uid:0/{team}"}
    # A team's name is not everyone's: outside the team it means nothing.
    with pytest.raises(NotFound):
        root.send("db", "to whom?")
