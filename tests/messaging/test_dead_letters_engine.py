"""Delivery counts and dead letters in the mailbox engine on its own."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agentos.messaging.mailbox import SCHEMA, Mailboxes, MailboxLimits
from agentos.state.database import Database


def run(coro):
    return asyncio.run(coro)


def test_a_message_delivered_too_often_becomes_a_dead_letter(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_deliveries=3))

    async def scenario():
        poison = await boxes.send("b", "a", "poison")
        healthy = await boxes.send("b", "a", "fine")
        # A fresh reader each time: what an agent restarted after a crash is.
        counts = [(await boxes.next(["b"])).deliveries for _ in range(3)]
        after = await boxes.next(["b"])
        dead, more = await boxes.dead(["b"], 10)
        return poison, healthy, counts, after, dead, more, await boxes.count("b")

    poison, healthy, counts, after, dead, more, left = run(scenario())
    assert counts == [1, 2, 3]
    assert after.id == healthy.id and after.deliveries == 1, "the next message is delivered instead"
    assert [(d.id, d.body, d.deliveries, d.sender, d.mailbox) for d in dead] == [
        (poison.id, "poison", 3, "a", "b")]
    assert dead[0].dead_at >= dead[0].sent_at and not more
    assert left == 1
    assert set(dead[0].to_dict()) == {"id", "from", "to", "body", "sent_at", "deliveries", "dead_at"}


def test_the_reader_chooses_how_many_deliveries_it_tolerates(db: Database) -> None:
    boxes = Mailboxes(db)

    async def scenario():
        message = await boxes.send("b", "a", 1)
        first = await boxes.next(["b"], max_deliveries=1)
        gone = await boxes.next(["b"], max_deliveries=1)
        return message, first, gone, await boxes.dead(["b"], 10)

    message, first, gone, (dead, _) = run(scenario())
    assert first.id == message.id and first.deliveries == 1
    assert gone is None and [d.id for d in dead] == [message.id]


def test_recv_with_ack_removes_and_never_dies(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_deliveries=1))

    async def scenario():
        await boxes.send("b", "a", 1)
        taken = await boxes.next(["b"], remove=True)
        return taken, await boxes.count("b"), await boxes.dead(None, 10)

    taken, left, (dead, _) = run(scenario())
    assert taken.deliveries == 1 and left == 0 and dead == []


def test_requeue_resets_the_count_under_a_new_id(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_messages=2, max_deliveries=1))

    async def scenario():
        dead_id = (await boxes.send("b", "a", {"job": 1})).id
        await boxes.next(["b"])
        assert await boxes.next(["b"]) is None
        other = await boxes.send("b", "a", "filler")
        wrong_box = await boxes.requeue([dead_id], ["thief"])
        done = await boxes.requeue([dead_id, 424242], ["b"])
        redelivered = await boxes.next(["b"], other.id)
        return dead_id, wrong_box, done, redelivered

    dead_id, wrong_box, done, redelivered = run(scenario())
    assert (wrong_box.requeued, wrong_box.missing) == ([], [dead_id]), "only its mailbox may requeue it"
    assert done.missing == [424242] and done.full == []
    [(old, message)] = done.requeued
    assert old == dead_id and message.id > dead_id and message.body == {"job": 1}
    assert (redelivered.id, redelivered.deliveries) == (message.id, 1)


def test_requeue_into_a_full_mailbox_keeps_the_dead_letter(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_messages=1, max_deliveries=1))

    async def scenario():
        dead_id = (await boxes.send("b", "a", 1)).id
        await boxes.next(["b"])
        await boxes.next(["b"])
        await boxes.send("b", "a", 2)
        done = await boxes.requeue([dead_id], None)
        return dead_id, done, await boxes.dead(None, 10)

    dead_id, done, (dead, _) = run(scenario())
    assert done.full == [dead_id] and done.requeued == []
    assert [d.id for d in dead] == [dead_id]


def test_ack_and_drop_remove_dead_letters_of_their_mailbox_only(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_deliveries=1))

    async def scenario():
        ids = [(await boxes.send("b", "a", n)).id for n in range(3)]
        cursor = 0
        for _ in ids:
            cursor = (await boxes.next(["b"], cursor)).id
        assert await boxes.next(["b"]) is None, "a fresh reader finds all three dead"
        acked_by_owner = await boxes.ack(["b"], [ids[0]])
        dropped_by_thief = await boxes.drop([ids[1]], ["thief"])
        dropped = await boxes.drop([ids[1], ids[0]], ["b"])
        return ids, acked_by_owner, dropped_by_thief, dropped, await boxes.dead(None, 10)

    ids, acked, stolen, dropped, (dead, _) = run(scenario())
    assert acked == [ids[0]], "a receiver that finished a message after it died has handled it"
    assert stolen == [] and dropped == [ids[1]]
    assert [d.id for d in dead] == [ids[2]]


def test_dead_letters_are_bounded_per_mailbox_and_listed_in_pages(db: Database) -> None:
    boxes = Mailboxes(db, MailboxLimits(max_messages=3, max_deliveries=1))

    async def scenario():
        ids = []
        for n in range(5):
            ids.append((await boxes.send("b", "a", n)).id)
            await boxes.next(["b"])
        await boxes.send("c", "a", "elsewhere")
        await boxes.next(["c"])
        await boxes.next(["b"])
        await boxes.next(["c"])
        return ids, await boxes.dead(["b"], 2), await boxes.dead(None, 10)

    ids, (page, more), (everything, _) = run(scenario())
    assert [d.id for d in page] == ids[2:4] and more, "the oldest beyond the bound are dropped"
    assert [d.mailbox for d in everything] == ["b", "b", "b", "c"]


def test_counts_and_dead_letters_survive_reopening(tmp_path: Path) -> None:
    async def first_run(boxes: Mailboxes):
        dead = await boxes.send("b", "a", "dies")
        await boxes.next(["b"])
        await boxes.next(["b"])
        counted = await boxes.send("b", "a", "counted")
        await boxes.next(["b"], dead.id)
        return dead.id, counted.id

    async def second_run(boxes: Mailboxes):
        return await boxes.dead(None, 10), await boxes.next(["b"])

    limits = MailboxLimits(max_deliveries=1)
    database = Database(tmp_path / "m.db", SCHEMA)
    database.open()
    dead_id, counted_id = run(first_run(Mailboxes(database, limits)))
    database.close()
    database = Database(tmp_path / "m.db", SCHEMA)
    database.open()
    try:
        (dead, _), after = run(second_run(Mailboxes(database, limits)))
    finally:
        database.close()
    assert [d.id for d in dead] == [dead_id]
    assert after is None, "the second message had used its one delivery before the restart"


def test_a_mailbox_file_from_before_delivery_counts_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, "
                    "sender TEXT NOT NULL, body TEXT NOT NULL, sent_at REAL NOT NULL)")
        old.execute("INSERT INTO messages (mailbox, sender, body, sent_at) VALUES ('b', 'a', '\"kept\"', 1.0)")
    old.close()
    database = Database(path, SCHEMA)
    database.open()
    boxes = Mailboxes(database)

    async def scenario():
        await boxes.upgrade()
        await boxes.upgrade()  # idempotent: every kernel start runs it
        return await boxes.next(["b"])

    try:
        message = run(scenario())
    finally:
        database.close()
    assert (message.body, message.deliveries) == ("kept", 1)


@pytest.mark.parametrize("value", [0, -1, True, "5", 1.5, 1_000_001])
def test_max_deliveries_setting_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="messaging.max_deliveries"):
        MailboxLimits.from_section({"max_deliveries": value})


def test_max_deliveries_setting_defaults_to_five() -> None:
    assert MailboxLimits.from_section({}).max_deliveries == 5
    assert MailboxLimits.from_section({"max_deliveries": 2}).max_deliveries == 2
