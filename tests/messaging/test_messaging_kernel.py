"""Mailboxes and pub/sub through a real kernel."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentos import (
    AsyncClient,
    Busy,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Timeout,
)


def test_send_recv_ack_between_registered_names(kernel) -> None:
    alice, bob = kernel.client(), kernel.client()
    assert alice.register("alice")["address"] == "name:alice"
    bob.register("bob")
    first = alice.send("bob", {"task": "parse", "n": 1})
    second = alice.send("bob", {"task": "parse", "n": 2})
    message = bob.recv(timeout=5, name="bob")
    assert message["id"] == first and message["body"] == {"task": "parse", "n": 1}
    assert message["from"] == "uid:0" and message["to"] == "name:bob"
    # Not handed to this connection twice, even before ACK.
    assert bob.recv(timeout=5, name="bob")["id"] == second
    with pytest.raises(Timeout):
        bob.recv(timeout=0, name="bob")
    assert bob.ack(first, name="bob") == [first]
    # A new connection (an agent restarted) gets what was never acknowledged.
    again = kernel.client()
    assert again.recv(timeout=5, name="bob")["id"] == second


def test_recv_with_ack_consumes(kernel) -> None:
    c = kernel.client()
    c.register("box")
    c.send("box", 1)
    assert c.recv(timeout=1, name="box", ack=True)["body"] == 1
    with pytest.raises(Timeout):
        kernel.client().recv(timeout=0, name="box")


def test_recv_blocks_only_its_own_request(kernel) -> None:
    async def scenario() -> tuple[dict, list[object]]:
        receiver = await AsyncClient.connect(kernel.socket_path)
        sender = await AsyncClient.connect(kernel.socket_path)
        try:
            await receiver.register("waiter")
            pending = asyncio.ensure_future(receiver.recv(timeout=60, name="waiter"))
            # The same connection keeps answering other syscalls while RECV waits.
            others = [await receiver.store("k", 1), await receiver.fetch("k"),
                      (await receiver.hello())["version"] is not None]
            assert not pending.done()
            await sender.send("waiter", "wake up")
            return await pending, others
        finally:
            await receiver.close()
            await sender.close()

    message, others = asyncio.run(scenario())
    assert message["body"] == "wake up"
    assert others == [1, 1, True]


def test_full_mailbox_is_the_senders_error(kernel) -> None:
    async def scenario() -> tuple[list[int | BaseException], int]:
        async with await AsyncClient.connect(kernel.socket_path) as c:
            await c.register("flooded")
            results = await asyncio.gather(*(c.send("flooded", n) for n in range(1100)),
                                           return_exceptions=True)
            one = await c.recv(timeout=0, name="flooded")
            await c.ack(one["id"], name="flooded")
            after_ack = await c.send("flooded", "fits again")
            return results, after_ack

    results, after_ack = asyncio.run(scenario())
    busy = [r for r in results if isinstance(r, Busy)]
    assert len(busy) == 100 and len(results) - len(busy) == 1000
    assert "full" in str(busy[0])
    assert isinstance(after_ack, int)


def test_bad_sends_are_refused(kernel) -> None:
    c = kernel.client()
    with pytest.raises(NotFound, match="nobody"):
        c.send("nobody", "hi")
    with pytest.raises(InvalidArgument, match="body"):
        c._call(0x20, {"to": "nobody"})
    with pytest.raises(InvalidArgument, match="name"):
        c.register("no spaces allowed")
    with pytest.raises(PermissionDenied, match="not a name you registered"):
        c.recv(timeout=0, name="someone-elses")


def test_broadcast_reaches_every_registered_mailbox_but_the_senders(kernel) -> None:
    a, b = kernel.client(), kernel.client()
    b.register("b1")
    b.register("b2")
    result = a.broadcast({"all": True})
    assert result == {"delivered": 2, "full": []}
    assert b.recv(timeout=1, name="b1")["body"] == {"all": True}
    assert b.recv(timeout=1, name="b2")["body"] == {"all": True}
    with pytest.raises(Timeout):
        a.recv(timeout=0)  # the sender's own mailbox (uid:0) is left out


def test_messages_survive_a_kernel_restart(kernel) -> None:
    c = kernel.client()
    c.register("durable")
    kept = c.send("durable", "unread")
    seen = c.send("durable", "read, not acked")
    gone = c.send("durable", "acked")
    assert c.recv(timeout=1, name="durable")["id"] == kept
    assert c.recv(timeout=1, name="durable")["id"] == seen
    assert c.recv(timeout=1, name="durable")["id"] == gone
    c.ack(gone, name="durable")
    kernel.restart()
    c = kernel.client()
    ids = [c.recv(timeout=1, name="durable")["id"] for _ in range(2)]
    assert ids == [kept, seen]
    with pytest.raises(Timeout):
        c.recv(timeout=0, name="durable")


def test_pubsub_streams_until_unsubscribed(kernel) -> None:
    sub_client, pub = kernel.client(), kernel.client()
    sub = sub_client.subscribe("jobs.*", "alerts")
    assert sub.topics == ["jobs.*", "alerts"]
    pub.publish("jobs.done", {"n": 1})
    pub.publish("other.topic", "not for us")
    pub.publish("alerts", "fire")
    first, second = next(sub), next(sub)
    assert (first["topic"], first["data"], first["from"]) == ("jobs.done", {"n": 1}, "uid:0")
    assert (second["topic"], second["data"]) == ("alerts", "fire")
    sub.close()
    assert list(sub) == []
    # The connection is still usable, and nobody is subscribed any more.
    pub.publish("jobs.done", 2)
    assert sub_client.hello()["version"]


def test_subscription_ends_when_the_client_disconnects(kernel) -> None:
    c = kernel.client()
    sub = c.subscribe("x")
    assert sub.id >= 1
    c.close()
    other = kernel.client()
    other.publish("x", "after the subscriber left")
    with pytest.raises(NotFound):
        other.unsubscribe(sub.id)


def test_bad_topics_are_refused(kernel) -> None:
    c = kernel.client()
    with pytest.raises(InvalidArgument):
        c.publish("has space", 1)
    with pytest.raises(InvalidArgument):
        c.publish("jobs.*", 1)
    with pytest.raises(InvalidArgument):
        next(iter(c.subscribe()))


PROBER = str(Path(__file__).resolve().parents[1] / "permissions" / "agents" / "prober.py")


def test_agent_mail_survives_the_agent_and_the_kernel_restarting(kernel) -> None:
    root = kernel.client()
    root.spawn("mailer", PROBER, args=["perms"], sandboxed=False)
    root.wait("mailer", timeout=60)
    assert '"principal": "uid:0/mailer"' in root.logs("mailer")
    sent = root.send("mailer", "sent while it was down")
    kernel.restart()
    root = kernel.client()
    # The same name from the same spawner is the same principal, hence the same mailbox.
    root.spawn("mailer", PROBER, args=["wait"], sandboxed=False)
    assert root.wait("mailer", timeout=60)["exit_code"] == 0
    got = [json.loads(line) for line in root.logs("mailer").splitlines() if line.startswith("{")]
    assert got[0]["ok"]["id"] == sent and got[0]["ok"]["body"] == "sent while it was down"
    assert got[0]["ok"]["to"] == "uid:0/mailer"


def test_lifecycle_events_are_streamed(kernel) -> None:
    root = kernel.client()
    with root.subscribe("agent.*") as events:
        agent = root.spawn("shortlived", PROBER, args=["perms"], sandboxed=False)
        seen = []
        for event in events:
            if event.get("id") == agent["id"]:
                seen.append(event["topic"])
                if event["topic"] == "agent.exited":
                    break
    assert seen[0] == "agent.started" and seen[-1] == "agent.exited"
