"""Adversarial agents spawned by the kernel: each attempt is refused with the right error,
the kernel and the other agents unharmed, and the denial audited under the agent's name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

PROBER = str(Path(__file__).with_name("agents") / "prober.py")


def run_prober(client, name: str, capabilities: list[str] | None, *attempts: str) -> dict[str, dict]:
    client.spawn(name, PROBER, args=list(attempts), sandboxed=False, capabilities=capabilities)
    ended = client.wait(name, timeout=60)
    assert ended["exit_code"] == 0, client.logs(name)
    results = [json.loads(line) for line in client.logs(name).splitlines() if line.startswith("{")]
    assert [r["attempt"] for r in results] == list(attempts), client.logs(name)
    return {r["attempt"]: r for r in results}


@pytest.fixture
def victim(kernel):
    client = kernel.client()
    info = client.spawn("victim", PROBER, args=["wait"], sandboxed=False)
    client.store("secret", "victim's own", agent=info["id"])
    yield info
    client.kill("victim", grace=1)


def test_agent_cannot_escalate_or_touch_what_is_not_its_own(kernel, victim) -> None:
    root = kernel.client()
    results = run_prober(root, "attacker", ["spawn", "kill", "message", "state_own"],
                         "perms", "raise-perms", "kill=victim", "spawn=http",
                         "spawn=spawn,admin", f"fetch-of={victim['id']}", "shared",
                         "http=http://127.0.0.1:9/", "forge", "spawn-kill=message")
    assert results["perms"]["ok"]["capabilities"] == ["kill", "message", "spawn", "state_own"]
    assert results["perms"]["ok"]["parent"] == "uid:0"
    expected = {
        "raise-perms": "'admin' capability",
        "spawn=http": "cannot give a child http",
        "spawn=spawn,admin": "cannot give a child admin",
        f"fetch-of={victim['id']}": "only an admin may use another agent's state",
        "shared": "'state_shared' capability",
        "http=http://127.0.0.1:9/": "'http' capability",
        "forge": "system topic",
    }
    for attempt, message in expected.items():
        assert results[attempt].get("error") == "PermissionDenied", results[attempt]
        assert message in results[attempt]["message"], results[attempt]
    # An agent it may not observe is, to it, an agent that does not exist.
    assert results["kill=victim"].get("error") == "NotFound", results["kill=victim"]
    # What it may do, it can: spawn a child with less, and kill that child.
    assert results["spawn-kill=message"]["ok"] in ("killed", "exited")
    # Nobody else was harmed.
    assert root.list_agents(name="victim")[0]["status"] == "running"
    assert root.fetch("secret", agent=victim["id"]) == "victim's own"
    audited = list(root.audit("attacker", limit=1000))
    denied = [r for r in audited if r["outcome"] == "permission_denied"]
    assert {r["op"] for r in denied} >= {"SET_PERMS", "SPAWN", "FETCH", "STORE", "HTTP", "PUBLISH"}
    assert any(r["op"] == "KILL" and r["outcome"] == "not_found" for r in audited)


def test_default_capabilities_and_an_agent_flooding_a_mailbox(kernel, victim) -> None:
    root = kernel.client()
    root.register("inbox")
    results = run_prober(root, "flooder", None, "perms", "flood=inbox")
    assert results["perms"]["ok"]["capabilities"] == ["message", "state_own", "think"]
    assert results["flood=inbox"]["error"] == "Busy"
    assert "full" in results["flood=inbox"]["message"]
    assert root.recv(timeout=0, name="inbox")["body"] == 0
    assert root.hello()["version"]


def test_agent_without_message_capability_cannot_send(kernel, victim) -> None:
    root = kernel.client()
    results = run_prober(root, "mute", ["state_own"], "flood=victim")
    assert results["flood=victim"]["error"] == "PermissionDenied"
    assert "'message' capability" in results["flood=victim"]["message"]
