"""Projects under attack, with the kernel as root and unprivileged: an agent of project ``red``,
itself named like its victim in project ``blue``, cannot kill, pause, observe, read the state of,
capture the mail of, purge, or spawn into project ``blue``; the same names in two projects never
meet."""
from __future__ import annotations

from typing import Any

import pytest

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def attack(hostile: HostileKernel) -> dict[str, Any]:
    victim = hostile.spawn("project_attack", "victim", name="runner", project="blue")
    hostile.wait_output(victim)
    attacker = hostile.spawn("project_attack", "attacker", "blue", name="runner", project="red",
                             capabilities=["message", "state_own", "spawn", "kill"], limits={"pids": 64})
    report = hostile.verdict(attacker)
    courier = hostile.attack("project_attack", "courier", name="courier", project="blue")
    report["_victim"], report["_courier"] = victim, courier
    return report


def test_no_agent_reaches_another_projects_agent_of_the_same_name(hostile: HostileKernel,
                                                                  attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    # Invisible, as any agent it did not spawn: not_found, so not even existence leaks.
    for what in ("kill the victim by project/name", "logs of the victim", "wait for the victim",
                 "pause the victim"):
        assert outcomes[what] == "not_found", what
    # Its own name means itself (its project first), never the other project's runner.
    assert outcomes["kill 'runner' (its own name)"] == "permission_denied"
    assert attack["list"] == ["red/runner"] and attack["own"] == []
    assert outcomes["list the victim's project"] == "ok"
    [victim] = [a for a in hostile.admin.list_agents(project="blue") if a["name"] == "runner"]
    assert victim["status"] == "running" and victim["id"] == attack["_victim"]["id"]
    assert hostile.alive()


def test_no_agent_captures_another_projects_mail_or_reads_its_state(hostile: HostileKernel,
                                                                    attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    # A running agent's name is never another's to register, in any project.
    assert outcomes["register 'runner'"] == "permission_denied"
    # The victim's registered name, registered again in red's own scope: no collision, no capture.
    assert outcomes["register 'inbox' (in its own project)"] == "ok"
    assert attack["_courier"]["to"].endswith("/@blue/runner")
    assert outcomes["read the victim's state"] == "permission_denied"
    assert hostile.admin.fetch("k", agent=attack["_courier"]["to"]) == "victim's"


def test_no_agent_purges_or_enters_another_project(hostile: HostileKernel, attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    assert outcomes["purge the victim's project"] == "permission_denied"
    assert outcomes["purge its own project"] == "permission_denied"
    assert outcomes["spawn a child into the victim's project"] == "permission_denied"
    assert [a["name"] for a in hostile.admin.list_agents(project="blue")] == ["runner", "courier"]
    hostile.admin.kill("blue/runner", grace=1)
    assert hostile.admin.purge("blue")["keys"] == 1
