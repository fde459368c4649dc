"""The durable mailbox engine on its own: order, bounds, acknowledgement, names."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentos.errors import AlreadyExists, Busy, InvalidArgument, PermissionDenied, TooLarge
from agentos.messaging.mailbox import SCHEMA, Lookup, Mailboxes, MailboxLimits
from agentos.state.database import Database


def run(coro):
    return asyncio.run(coro)


def test_messages_come_out_in_order_and_stay_until_acked(db: Database) -> None:
    boxes = Mailboxes(db)

    async def scenario():
        sent = [await boxes.send("b", "a", {"n": n}) for n in range(3)]
        first = await boxes.next(["b"])
        again = await boxes.next(["b"])
        second = await boxes.next(["b"], after_id=first.id)
        acked = await boxes.ack(["b"], [first.id, 999_999])
        after_ack = await boxes.next(["b"])
        return sent, first, again, second, acked, after_ack, await boxes.count("b")

    sent, first, again, second, acked, after_ack, left = run(scenario())
    assert [m.body for m in sent] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert first.body == {"n": 0} and first.sender == "a" and first.mailbox == "b"
    assert again.id == first.id, "an unacknowledged message is delivered again"
    assert second.body == {"n": 1}
    assert acked == [first.id]
    assert after_ack.body == {"n": 1}
    assert left == 2


def test_only_the_mailbox_it_is_in_can_ack_a_message(db: Database) -> None:
    boxes = Mailboxes(db)

    async def scenario():
        message = await boxes.send("victim", "a", "secret")
        stolen = await boxes.ack(["thief"], [message.id])
        return stolen, await boxes.count("victim")

    assert run(scenario()) == ([], 1)


def test_full_mailbox_refuses_and_stores_nothing(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_messages=3))

    async def scenario():
        for n in range(3):
            await boxes.send("b", "a", n)
        with pytest.raises(Busy) as exc:
            await boxes.send("b", "a", 3)
        count_full = await boxes.count("b")
        first = await boxes.next(["b"])
        await boxes.ack(["b"], [first.id])
        await boxes.send("b", "a", 4)
        return exc.value, count_full, await boxes.count("b")

    err, count_full, count_after = run(scenario())
    assert "full" in err.message and err.details["limit"] == 3
    assert count_full == 3 and count_after == 3


def test_send_many_skips_full_mailboxes(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_messages=1))

    async def scenario():
        await boxes.send("full", "x", "old")
        return await boxes.send_many(["a", "full", "b", "a"], "x", "hi")

    sent, full = run(scenario())
    assert sorted(m.mailbox for m in sent) == ["a", "b"]
    assert full == ["full"]


def test_message_size_and_json_checks(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_message_bytes=64))

    async def scenario():
        with pytest.raises(TooLarge):
            await boxes.send("b", "a", "x" * 100)
        for body in (object(), "\udfff", ["\ud800"], float("nan"), {"x": float("inf")}):
            with pytest.raises(InvalidArgument):
                await boxes.send("b", "a", body)
            with pytest.raises(InvalidArgument):
                await boxes.send_many(["b"], "a", body)
        return await boxes.count("b")

    assert run(scenario()) == 0


def test_next_reads_several_mailboxes_in_global_order(db: Database) -> None:
    boxes = Mailboxes(db)

    async def scenario():
        await boxes.send("id-1", "x", "to id")
        await boxes.send("other", "x", "not mine")
        await boxes.send("alias", "x", "to alias")
        first = await boxes.next(["id-1", "alias"])
        second = await boxes.next(["id-1", "alias"], first.id)
        third = await boxes.next(["id-1", "alias"], second.id)
        return first.body, second.body, third

    assert run(scenario()) == ("to id", "to alias", None)


def test_names_are_owned_per_scope_and_agents_names_are_refused(db: Database) -> None:
    boxes = Mailboxes(db)

    async def scenario():
        await boxes.register("uid:0/team", "parser", "uid:0/team/a", owner="uid:0/team/a")
        await boxes.register("uid:0/team", "parser", "uid:0/team/a", owner="uid:0/team/a")  # idempotent
        with pytest.raises(AlreadyExists):
            await boxes.register("uid:0/team", "parser", "uid:0/team/b", owner="uid:0/team/b")
        # Another scope has a "parser" of its own.
        await boxes.register("uid:0/other", "parser", "uid:0/other/c", owner="uid:0/other/c")
        await asyncio.wrap_future(boxes.remember_agent("uid:0/worker", "worker"))
        with pytest.raises(PermissionDenied, match="name of agent uid:0/worker"):
            await boxes.register("uid:0/team", "worker", "uid:0/team/a", owner="uid:0/team/a")
        await boxes.register("uid:0", "worker", "uid:0/worker", owner="uid:0/worker")  # its own
        return (await boxes.lookup("parser", ["uid:0/team/a", "uid:0/team", "uid:0", ""]),
                await boxes.lookup("parser", ["uid:0/other", "uid:0", ""]),
                await boxes.lookup("worker", ["uid:0", ""]),
                await boxes.lookup("nobody", ["uid:0", ""]),
                await boxes.address_of("uid:0/team/a", "parser"), await boxes.address_of("uid:0/team/b", "parser"),
                await boxes.is_agent("uid:0/worker"), await boxes.is_agent("uid:0/team"),
                await boxes.addresses())

    assert run(scenario()) == (
        Lookup([], "uid:0/team/a"), Lookup([], "uid:0/other/c"),
        Lookup(["uid:0/worker"], "uid:0/worker"), Lookup([], None),
        "uid:0/team/a", None, True, False, ["uid:0/other/c", "uid:0/team/a", "uid:0/worker"])


def test_mailboxes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    async def write():
        db = Database(path, SCHEMA)
        db.open()
        try:
            boxes = Mailboxes(db)
            await boxes.register("", "n", "addr", "owner")
            await boxes.send("addr", "s", "kept")
            gone = await boxes.send("addr", "s", "acked")
            await boxes.ack(["addr"], [gone.id])
        finally:
            db.close()

    async def read():
        db = Database(path, SCHEMA)
        db.open()
        try:
            boxes = Mailboxes(db)
            message = await boxes.next(["addr"])
            return (await boxes.lookup("n", [""])).alias, message.body, await boxes.count("addr")
        finally:
            db.close()

    run(write())
    assert run(read()) == ("addr", "kept", 1)


def test_one_caller_holds_a_bounded_number_of_names(db: Database) -> None:
    """A client's names are mailboxes of their own: unbounded, one caller could make every
    BROADCAST write as many messages as it liked."""
    from agentos.messaging.mailbox import MAX_NAMES_PER_OWNER

    boxes = Mailboxes(db)

    async def scenario():
        for n in range(MAX_NAMES_PER_OWNER):
            await boxes.register("uid:1000", f"n{n}", f"name:uid:1000/n{n}", owner="uid:1000")
        await boxes.register("uid:1000", "n0", "name:uid:1000/n0", owner="uid:1000")  # held: fine
        with pytest.raises(TooLarge, match="names"):
            await boxes.register("uid:1000", "one-more", "name:uid:1000/one-more", owner="uid:1000")
        # Another caller is not affected.
        await boxes.register("uid:1001", "n0", "name:uid:1001/n0", owner="uid:1001")

    run(scenario())
