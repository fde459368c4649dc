"""``mail.dead``: a message moved to the dead letters is announced on the event bus, to the
mailbox's owner and admins only (the DEAD_LETTERS rule), never to another uid's subscriber."""
from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentos import Client, PermissionDenied, Timeout
from tests.permissions.identities import NOBODY, configured_kernel, run_as

POISON_EATER = str(Path(__file__).with_name("agents") / "poison_eater.py")
SECTIONS = {"permissions": {"uids": {str(NOBODY): ["message"]}}, "messaging": {"max_deliveries": 2}}


def until(events: Iterable[dict[str, Any]], topic: str) -> dict[str, Any]:
    """The next event of ``topic`` on a subscription (others are skipped)."""
    for event in events:
        if event["topic"] == topic:
            return dict(event)
    raise AssertionError(f"the subscription ended before a {topic} event")


def listen_until_done(client: Client) -> list[str]:
    """Every topic a subscriber to ``*`` is shown, from ``test.listening`` (its own, which tells
    the test it listens) to ``test.done``, published once everything under test happened."""
    with client.subscribe("*") as events:
        client.publish("test.listening")
        topics = []
        for event in events:
            topics.append(event["topic"])
            if event["topic"] == "test.done":
                return topics
    raise AssertionError("the subscription ended before test.done")


def test_a_poison_message_is_announced_to_admins_and_not_to_another_uid() -> None:
    with configured_kernel(SECTIONS, world_reachable=True) as kernel:
        root = kernel.client()
        stranger: dict[str, Any] = {}
        watcher = threading.Thread(
            target=lambda: stranger.update(run_as(NOBODY, kernel.socket_path, listen_until_done)))
        with root.subscribe("mail.dead", "test.*") as events:
            watcher.start()
            until(events, "test.listening")
            root.spawn("runner", POISON_EATER, sandboxed=False, project="team",
                       restart={"policy": "on-failure", "max_restarts": 10, "window": "1h",
                                "backoff": "10ms", "backoff_max": "10ms"})
            poison = root.send("runner", "poison")
            root.send("runner", "stop")
            dead = until(events, "mail.dead")
            assert root.wait("team/runner", timeout=60)["exit_code"] == 0, root.logs("team/runner")
            root.publish("test.done")
            watcher.join(timeout=60)
        assert not watcher.is_alive()
        assert {k: v for k, v in dead.items() if k != "ts"} == {
            "topic": "mail.dead", "mailbox": "uid:0/@team/runner", "principal": "uid:0/@team/runner",
            "id": poison, "deliveries": 2, "sender": "uid:0", "project": "team"}
        [letter] = root.dead_letters("team/runner")["dead"]
        assert (letter["id"], letter["deliveries"]) == (poison, 2)

        topics = stranger["ok"]
        assert topics[0] == "test.listening" and topics[-1] == "test.done", topics
        assert "mail.dead" not in topics, topics
        assert not any(topic.startswith("agent.") for topic in topics), "nor are root's agents' events"


def test_the_owner_of_a_mailbox_sees_its_dead_letters_announced_and_cannot_forge_one() -> None:
    with configured_kernel(SECTIONS, world_reachable=True) as kernel:
        root = kernel.client()

        def own_mailbox(client: Client) -> dict[str, Any]:
            client.register("box")
            with client.subscribe("mail.*") as events:
                sent = client.send("box", "poison")
                for _ in range(2):  # two readers that crash before ACK (max_deliveries: 2)
                    with Client(kernel.socket_path) as reader:
                        reader.recv(timeout=5, name="box")
                with Client(kernel.socket_path) as reader:
                    try:
                        reader.recv(timeout=0, name="box")
                    except Timeout:
                        pass
                    else:
                        raise AssertionError("a message delivered twice was delivered again")
                event = until(events, "mail.dead")
            try:
                client.publish("mail.dead", {"principal": "uid:0"})
            except PermissionDenied as exc:
                event["forged"] = exc.message
            return {"sent": sent, **event}

        with root.subscribe("mail.dead") as events:
            seen = run_as(NOBODY, kernel.socket_path, own_mailbox)["ok"]
            by_admin = until(events, "mail.dead")
        assert (seen["mailbox"], seen["principal"], seen["id"], seen["deliveries"], seen["project"]) == (
            f"name:uid:{NOBODY}/box", f"uid:{NOBODY}", seen["sent"], 2, None)
        assert "system topic" in seen["forged"]
        assert by_admin["id"] == seen["sent"], "an admin sees every mailbox's"
