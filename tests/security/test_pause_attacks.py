"""PAUSE, RESUME and the timeouts under attack, with the kernel as root and unprivileged: an agent
cannot freeze or thaw its parent, a sibling or itself, cannot give a child more time than it has
left, and mail for a paused agent waits for it whole."""
from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def attack(hostile: HostileKernel) -> dict[str, Any]:
    sibling = hostile.spawn("victim", "pause-victim", name="pause-sibling")
    hostile.admin.wait(id=sibling["id"], until="ready", timeout=60)
    attacker = hostile.spawn("pause_attack", {"sibling": sibling["id"]}, name="pause-attacker",
                             capabilities=["spawn", "kill"], timeout="10m", limits={"pids": 64})
    report = hostile.wait_output(attacker)[-1]
    report["_sibling"], report["_attacker"] = sibling, attacker
    return report


def test_no_agent_pauses_or_resumes_what_it_does_not_own(hostile: HostileKernel, attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    # Invisible (no 'observe'): as KILL, not_found, so nothing leaks of the sibling's existence.
    assert outcomes["pause the sibling by id"] == "not_found"
    assert outcomes["resume the sibling"] == "not_found"
    assert outcomes["pause itself"] == "permission_denied"
    assert attack["child"]["outcomes"] == {"pause the parent": "not_found", "resume the parent": "not_found",
                                           "pause itself": "permission_denied"}
    for agent in (attack["_sibling"], attack["_attacker"]):
        [info] = [a for a in hostile.admin.list_agents() if a["id"] == agent["id"]]
        assert info["status"] == "running"
    assert hostile.alive()


def test_an_agent_may_pause_its_own_child(attack: dict[str, Any]) -> None:
    outcomes = attack["outcomes"]
    assert outcomes["pause its child"] == "ok" and outcomes["its child shows paused"] == "paused"
    assert outcomes["resume its child"] == "ok"


def test_a_child_gets_no_more_time_than_its_spawner_has_left(attack: dict[str, Any]) -> None:
    assert attack["outcomes"]["spawn a child with a longer timeout"] == "permission_denied"
    assert 0 < attack["child_timeout"] <= 600  # inherited: what the attacker had left


def test_mail_for_a_paused_agent_is_not_lost(hostile: HostileKernel) -> None:
    reader = hostile.spawn("mail_echo", name="paused-mail")
    hostile.wait_output(reader)
    try:
        hostile.admin.pause(id=reader["id"])
        for index in range(50):
            hostile.admin.send(reader["id"], {"n": index, "pad": "x" * 50_000})
        assert hostile.alive()
        assert len(hostile.output(reader)) == 1
        hostile.admin.resume(id=reader["id"])
        deadline = time.monotonic() + 60
        while len(hostile.output(reader)) < 51:
            assert time.monotonic() < deadline, hostile.output(reader)[-1]
            time.sleep(0.05)
        assert [line["n"] for line in hostile.output(reader)[1:]] == list(range(50))
    finally:
        hostile.admin.kill(id=reader["id"], grace=0)
