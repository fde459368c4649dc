"""``agent.*`` events follow LIST's rule: a subscriber is shown the events of itself and of the
agents it spawned (and theirs), every agent's only with ``observe``. Another local user
subscribed to ``*`` must not learn, through events, that an agent exists, what it is called or
how it ended."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agentos import Client
from tests.permissions.identities import NOBODY, configured_kernel, run_as

SLEEPER = str(Path(__file__).parents[1] / "processes" / "agents" / "sleeper.py")


def _events_around_own_agent(client: Client) -> dict[str, Any]:
    """As the stranger: subscribe to everything, spawn and kill an agent of its own, and collect
    what it is shown until the root client says ``test.done``."""
    with client.subscribe("*") as events:
        client.publish("test.listening")
        mine = client.spawn("mine", SLEEPER)
        client.kill(id=mine["id"], grace=0)
        client.publish("test.spawned")
        seen = []
        for event in events:
            seen.append(dict(event))
            if event["topic"] == "test.done":
                return {"mine": mine["id"], "seen": seen}
    raise AssertionError("the subscription ended before test.done")


def test_another_uid_is_shown_its_own_agents_events_and_never_anothers() -> None:
    sections = {"permissions": {"uids": {str(NOBODY): ["message", "spawn", "kill"]}}}
    with configured_kernel(sections, world_reachable=True) as kernel:
        root = kernel.client()
        stranger: dict[str, Any] = {}
        watcher = threading.Thread(
            target=lambda: stranger.update(run_as(NOBODY, kernel.socket_path, _events_around_own_agent)))
        with root.subscribe("agent.*", "test.*") as events:
            watcher.start()
            admin_seen = []
            for event in events:
                admin_seen.append(dict(event))
                if event["topic"] == "test.spawned":
                    break
            secret = root.spawn("secret", SLEEPER, sandboxed=False)
            root.kill(id=secret["id"], grace=0)
            for event in events:
                admin_seen.append(dict(event))
                if event["topic"] == "agent.killed" and event["id"] == secret["id"]:
                    break
            root.publish("test.done")
            watcher.join(timeout=120)
        assert not watcher.is_alive()
        assert "ok" in stranger, stranger
        seen = stranger["ok"]["seen"]
        mine = stranger["ok"]["mine"]

        shown = {(event["topic"], event.get("id")) for event in seen if event["topic"].startswith("agent.")}
        assert ("agent.started", mine) in shown and ("agent.killed", mine) in shown, seen
        assert all(agent_id == mine for _, agent_id in shown), f"another agent's events leaked: {seen}"
        assert not any("secret" in str(event) for event in seen), seen
        # The admin (observe) is shown both.
        admin_shown = {(event["topic"], event.get("id")) for event in admin_seen}
        assert {("agent.started", mine), ("agent.started", secret["id"])} <= admin_shown, admin_seen
