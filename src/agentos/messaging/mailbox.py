"""Durable, bounded mailboxes and the name registry, in SQLite.

A message stays in its mailbox until acknowledged: delivery does not remove it,
so a receiver that dies (or a kernel that is killed) before ACK gets it again.
Which messages a reader has already been handed is the reader's cursor, kept
by the caller (``after_id``), not here. A mailbox holds at most
``max_messages``; a send into a full one raises ``Busy`` and stores nothing.

Every delivery is counted on disk. A message already delivered ``max_deliveries``
times without an ACK is not delivered again: it moves to its mailbox's dead
letters (the ``dead_letters`` table, at most ``max_messages`` per mailbox, the
oldest dropped beyond), where its owner or an admin lists, requeues or drops it.
So a message that crashes its receiver every time cannot crash-loop it.
"""
from __future__ import annotations

import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ujson

from ..errors import AlreadyExists, Busy, PermissionDenied, TooLarge
from ..state.database import Database, encode_bounded
from ..units import parse_bytes

log = logging.getLogger("agentos.messaging")

#: Names one caller (agent or client) may hold at once.
MAX_NAMES_PER_OWNER = 256
#: The most deliveries a message may be given before it is a dead letter (RECV's bound too).
MAX_DELIVERIES = 1_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_mailbox ON messages(mailbox, id);
-- A message keeps its id when it dies; requeueing it appends it again under a new id.
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    mailbox TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_mailbox ON dead_letters(mailbox, id);
-- Registered names before they had scopes: global, first come first served, so a
-- squatter could take a future agent's name. They are not carried over.
DROP TABLE IF EXISTS names;
CREATE TABLE IF NOT EXISTS aliases (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    owner TEXT NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_owner ON aliases(owner, name);
CREATE TABLE IF NOT EXISTS agents (
    principal TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    started_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agents_by_name ON agents(name, started_at);
"""


@dataclass(frozen=True)
class MailboxLimits:
    """Bounds on one mailbox and on one message body (UTF-8 bytes of its JSON)."""

    max_messages: int = 1000
    max_message_bytes: int = 256 * 1024
    #: Deliveries without ACK after which a message goes to the dead letters (RECV may
    #: choose another number for the message it asks for).
    max_deliveries: int = 5

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> MailboxLimits:
        """Read ``mailbox_size`` (a count), ``max_message`` (a size like ``256Ki``) and
        ``max_deliveries`` (a count, at most ``MAX_DELIVERIES``)."""
        defaults = cls()
        return cls(max_messages=_count(section, "mailbox_size", defaults.max_messages),
                   max_message_bytes=parse_bytes(section.get("max_message",
                                                             defaults.max_message_bytes),
                                                 "messaging.max_message"),
                   max_deliveries=_count(section, "max_deliveries", defaults.max_deliveries,
                                         MAX_DELIVERIES))


@dataclass(frozen=True)
class Message:
    """One stored message."""

    id: int
    mailbox: str
    sender: str
    body: Any
    sent_at: float
    #: Times it has been handed out, this delivery included (0 when just sent).
    deliveries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.mailbox, "from": self.sender, "body": self.body,
                "sent_at": self.sent_at, "deliveries": self.deliveries}


@dataclass(frozen=True)
class DeadLetter(Message):
    """A message taken out of delivery after ``deliveries`` deliveries without ACK."""

    dead_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "dead_at": self.dead_at}


@dataclass(frozen=True)
class Requeued:
    """What REQUEUE did: dead letter id -> the live message it became; ids that are not
    dead letters of the given mailboxes; ids left dead because their mailbox is full."""

    requeued: list[tuple[int, Message]]
    missing: list[int]
    full: list[int]


@dataclass(frozen=True)
class Lookup:
    """What a name means to the mailbox database: agents that ever received under that
    name (their principals, the most recently started first) and the nearest alias."""

    agents: list[str]
    alias: str | None


class Mailboxes:
    """All mailboxes of one kernel, keyed by address, plus registered names."""

    def __init__(self, db: Database, limits: MailboxLimits | None = None) -> None:
        self._db = db
        self.limits = limits or MailboxLimits()

    async def upgrade(self) -> None:
        """Bring a mailboxes.db written before delivery counts up to this schema."""

        def add_columns(conn: sqlite3.Connection) -> None:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if "deliveries" not in columns:
                conn.execute("ALTER TABLE messages ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0")

        await self._db.run(add_columns)

    def encode(self, body: Any) -> str:
        """The stored form of ``body``; raises TooLarge/InvalidArgument before any I/O."""
        return encode_bounded(body, self.limits.max_message_bytes, "message")

    async def send(self, address: str, sender: str, body: Any) -> Message:
        """Append to ``address``'s mailbox; Busy if it is full."""
        text = self.encode(body)
        now = time.time()

        def insert(conn: sqlite3.Connection) -> Message:
            if self._count(conn, address) >= self.limits.max_messages:
                raise Busy(f"mailbox of {address} is full ({self.limits.max_messages} "
                           "unacknowledged messages)", to=address, limit=self.limits.max_messages)
            return self._insert(conn, address, sender, body, text, now)

        return await self._db.run(insert)

    async def send_many(self, addresses: Iterable[str], sender: str,
                        body: Any) -> tuple[list[Message], list[str]]:
        """One body into many mailboxes in one transaction; returns (sent, full addresses)."""
        text = self.encode(body)
        now = time.time()
        targets = list(dict.fromkeys(addresses))

        def insert_all(conn: sqlite3.Connection) -> tuple[list[Message], list[str]]:
            sent, full = [], []
            for address in targets:
                if self._count(conn, address) >= self.limits.max_messages:
                    full.append(address)
                else:
                    sent.append(self._insert(conn, address, sender, body, text, now))
            return sent, full

        return await self._db.run(insert_all)

    async def next(self, addresses: list[str], after_id: int = 0, *,
                   max_deliveries: int | None = None, remove: bool = False,
                   buried: list[DeadLetter] | None = None) -> Message | None:
        """Deliver the oldest unacknowledged message to any of ``addresses`` with id >
        ``after_id``, counting the delivery (or removing it, with ``remove``).

        Messages already delivered ``max_deliveries`` times (the limits' by default) are
        moved to the dead letters on the way instead, and appended to ``buried`` once
        committed (so an event about them never announces a move that was rolled back).
        """
        marks = ",".join("?" * len(addresses))
        limit = self.limits.max_deliveries if max_deliveries is None else max_deliveries

        def deliver(conn: sqlite3.Connection) -> tuple[Message | None, list[DeadLetter]]:
            cursor = after_id
            dead: list[DeadLetter] = []
            while True:
                row = conn.execute(
                    f"SELECT id, mailbox, sender, body, sent_at, deliveries FROM messages "
                    f"WHERE mailbox IN ({marks}) AND id > ? ORDER BY id LIMIT 1",
                    (*addresses, cursor)).fetchone()
                if row is None:
                    return None, dead
                message_id, mailbox, sender, body, sent_at, deliveries = row
                if deliveries >= limit:
                    dead_at = time.time()
                    self._bury(conn, message_id, mailbox, deliveries, dead_at)
                    dead.append(DeadLetter(message_id, mailbox, sender, ujson.loads(body), sent_at,
                                           deliveries, dead_at))
                    cursor = message_id
                    continue
                if remove:
                    conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                else:
                    conn.execute("UPDATE messages SET deliveries = ? WHERE id = ?",
                                 (deliveries + 1, message_id))
                return Message(message_id, mailbox, sender, ujson.loads(body), sent_at,
                               deliveries + 1), dead

        message, dead = await self._db.run(deliver)
        if buried is not None:
            buried.extend(dead)
        return message

    async def ack(self, addresses: list[str], ids: list[int]) -> list[int]:
        """Remove messages ``ids`` if they are in one of ``addresses``, live or dead (a
        receiver that finished a message after it died has still handled it); returns
        those removed."""
        marks = ",".join("?" * len(addresses))

        def delete(conn: sqlite3.Connection) -> list[int]:
            removed = []
            for message_id in ids:
                for table in ("messages", "dead_letters"):
                    row = conn.execute(f"DELETE FROM {table} WHERE id = ? AND mailbox IN ({marks}) "
                                       "RETURNING id", (message_id, *addresses)).fetchone()
                    if row is not None:
                        removed.append(row[0])
                        break
            return removed

        return await self._db.run(delete)

    # -- dead letters ------------------------------------------------------------------

    async def dead(self, addresses: list[str] | None, limit: int,
                   under: str | None = None) -> tuple[list[DeadLetter], bool]:
        """The oldest ``limit`` dead letters of ``addresses`` (of every mailbox if None), only
        those at or beneath the principal glob ``under`` if given, and whether there are more."""
        where, params = _mailbox_filter(addresses)
        if under is not None:
            where = f"{where} {'AND' if where else 'WHERE'} (mailbox GLOB ? OR mailbox GLOB ?)"
            params = (*params, under, f"{under}/*")

        def select(conn: sqlite3.Connection) -> tuple[list[DeadLetter], bool]:
            rows = conn.execute(
                f"SELECT id, mailbox, sender, body, sent_at, deliveries, dead_at FROM dead_letters "
                f"{where} ORDER BY id LIMIT ?", (*params, limit + 1)).fetchall()
            letters = [DeadLetter(r[0], r[1], r[2], ujson.loads(r[3]), r[4], r[5], r[6])
                       for r in rows[:limit]]
            return letters, len(rows) > limit

        return await self._db.run(select)

    async def depths(self, addresses: list[str] | None,
                     under: str | None = None) -> dict[str, tuple[int, int]]:
        """``{mailbox: (messages waiting, dead letters)}`` of ``addresses`` (every mailbox if
        None; at or beneath the principal glob ``under`` if given) that hold any: counted on
        the mailbox indexes."""
        where, params = _mailbox_filter(addresses)
        if under is not None:
            where = f"{where} {'AND' if where else 'WHERE'} (mailbox GLOB ? OR mailbox GLOB ?)"
            params = (*params, under, f"{under}/*")

        def count(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            found: dict[str, tuple[int, int]] = {}
            for mailbox, n in conn.execute(f"SELECT mailbox, COUNT(*) FROM messages {where} GROUP BY mailbox", params):
                found[mailbox] = (n, 0)
            for mailbox, n in conn.execute(f"SELECT mailbox, COUNT(*) FROM dead_letters {where} GROUP BY mailbox",
                                           params):
                found[mailbox] = (found.get(mailbox, (0, 0))[0], n)
            return found

        return await self._db.run(count)

    async def requeue(self, ids: list[int], addresses: list[str] | None) -> Requeued:
        """Put dead letters ``ids`` of ``addresses`` (any mailbox if None) back at the end of
        their mailbox with no deliveries counted, unless that mailbox is full."""
        where, params = _mailbox_filter(addresses, "AND")

        def move(conn: sqlite3.Connection) -> Requeued:
            done: list[tuple[int, Message]] = []
            missing, full = [], []
            for message_id in ids:
                row = conn.execute(f"SELECT mailbox, sender, body, sent_at FROM dead_letters "
                                   f"WHERE id = ? {where}", (message_id, *params)).fetchone()
                if row is None:
                    missing.append(message_id)
                elif self._count(conn, row[0]) >= self.limits.max_messages:
                    full.append(message_id)
                else:
                    mailbox, sender, text, sent_at = row
                    conn.execute("DELETE FROM dead_letters WHERE id = ?", (message_id,))
                    # sent_at stays the sender's; the new id puts it behind every reader's cursor.
                    message = self._insert(conn, mailbox, sender, ujson.loads(text), text, sent_at)
                    done.append((message_id, message))
            return Requeued(done, missing, full)

        return await self._db.run(move)

    async def drop(self, ids: list[int], addresses: list[str] | None) -> list[int]:
        """Delete dead letters ``ids`` of ``addresses`` (any mailbox if None); returns those deleted."""
        where, params = _mailbox_filter(addresses, "AND")

        def delete(conn: sqlite3.Connection) -> list[int]:
            return [row[0] for message_id in ids for row in conn.execute(
                f"DELETE FROM dead_letters WHERE id = ? {where} RETURNING id",
                (message_id, *params)).fetchall()]

        return await self._db.run(delete)

    async def count(self, address: str) -> int:
        """Unacknowledged messages waiting in ``address``."""
        return await self._db.run(lambda conn: self._count(conn, address))

    # -- names ------------------------------------------------------------------------

    async def register(self, scope: str, name: str, address: str, owner: str) -> None:
        """Bind ``name`` in ``scope`` (``GLOBAL`` or a namespace principal) to ``address``.

        PermissionDenied if an agent (running now or ever started here) is called
        ``name``, unless that agent is ``owner``; AlreadyExists if another owner holds
        the name in this scope.
        """

        def bind(conn: sqlite3.Connection) -> None:
            agent = conn.execute("SELECT principal FROM agents WHERE name = ? AND principal != ? "
                                 "LIMIT 1", (name, owner)).fetchone()
            if agent is not None:
                raise PermissionDenied(f"{name!r} is the name of agent {agent[0]}: an agent's name "
                                       "always reaches that agent", field="name", name=name)
            row = conn.execute("SELECT owner FROM aliases WHERE scope = ? AND name = ?",
                               (scope, name)).fetchone()
            if row is not None and row[0] != owner:
                raise AlreadyExists(f"name {name!r} is registered by someone else in "
                                    f"{scope or 'the global scope'}", name=name)
            if row is None:
                held = conn.execute("SELECT COUNT(*) FROM aliases WHERE owner = ?", (owner,)).fetchone()[0]
                if held >= MAX_NAMES_PER_OWNER:
                    # A client's names are mailboxes of their own: unbounded, they would make
                    # every BROADCAST as costly as the caller liked.
                    raise TooLarge(f"{owner} already holds {held} names, the most one caller may "
                                   "register", field="name", limit=MAX_NAMES_PER_OWNER)
            conn.execute("INSERT OR REPLACE INTO aliases (scope, name, address, owner, registered_at) "
                         "VALUES (?, ?, ?, ?, ?)", (scope, name, address, owner, time.time()))

        await self._db.run(bind)

    async def lookup(self, name: str, scopes: Sequence[str]) -> Lookup:
        """Agents called ``name`` and the alias ``name`` of the first of ``scopes`` that has one."""

        def select(conn: sqlite3.Connection) -> Lookup:
            agents = [row[0] for row in conn.execute(
                "SELECT principal FROM agents WHERE name = ? ORDER BY started_at DESC", (name,))]
            marks = ",".join("?" * len(scopes))
            found = dict(conn.execute(f"SELECT scope, address FROM aliases "
                                      f"WHERE name = ? AND scope IN ({marks})", (name, *scopes)))
            alias = next((found[scope] for scope in scopes if scope in found), None)
            return Lookup(agents, alias)

        return await self._db.run(select)

    async def address_of(self, owner: str, name: str) -> str | None:
        """The address of the name ``owner`` registered as ``name``, if it did."""
        row = await self._db.run(lambda conn: conn.execute(
            "SELECT address FROM aliases WHERE owner = ? AND name = ? ORDER BY scope LIMIT 1",
            (owner, name)).fetchone())
        return None if row is None else row[0]

    async def owned_addresses(self, owner: str) -> list[str]:
        """The addresses of every name ``owner`` registered."""
        rows = await self._db.run(lambda conn: conn.execute(
            "SELECT DISTINCT address FROM aliases WHERE owner = ?", (owner,)).fetchall())
        return [row[0] for row in rows]

    async def addresses(self) -> list[str]:
        """Every registered address (the reach of a BROADCAST beyond live agents)."""
        rows = await self._db.run(lambda conn: conn.execute(
            "SELECT DISTINCT address FROM aliases ORDER BY address").fetchall())
        return [row[0] for row in rows]

    # -- agents ----------------------------------------------------------------------

    def remember_agent(self, principal: str, name: str) -> concurrent.futures.Future[None]:
        """Record that an agent called ``name`` receives at ``principal``, for good: its name
        keeps winning over aliases while it is down and after kernel restarts."""

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO agents (principal, name, started_at) VALUES (?, ?, ?)",
                         (principal, name, time.time()))

        return self._db.submit(upsert)

    async def is_agent(self, principal: str) -> bool:
        """Whether an agent ever received at ``principal``."""
        row = await self._db.run(lambda conn: conn.execute(
            "SELECT 1 FROM agents WHERE principal = ?", (principal,)).fetchone())
        return row is not None

    async def purge(self, root: str) -> dict[str, int]:
        """Remove every mailbox, dead letter, registered name and remembered agent at or beneath
        the principal glob ``root`` (a project's part: ``uid:1000/@team``, or ``*/@team``)."""
        under = (root, f"{root}/*")

        def wipe(conn: sqlite3.Connection) -> dict[str, int]:
            def delete(table: str, column: str) -> int:
                return conn.execute(f"DELETE FROM {table} WHERE {column} GLOB ? OR {column} GLOB ?",
                                    under).rowcount

            return {"messages": delete("messages", "mailbox"), "dead_letters": delete("dead_letters", "mailbox"),
                    # An alias goes with its owner, and with the scope it was registered in.
                    "names": delete("aliases", "owner") + delete("aliases", "scope"),
                    "agents": delete("agents", "principal")}

        return await self._db.run(wipe)

    # -- on the database thread ---------------------------------------------------

    @staticmethod
    def _count(conn: sqlite3.Connection, address: str) -> int:
        return conn.execute("SELECT COUNT(*) FROM messages WHERE mailbox = ?",
                            (address,)).fetchone()[0]

    def _bury(self, conn: sqlite3.Connection, message_id: int, mailbox: str, deliveries: int,
              dead_at: float) -> None:
        """Move a live message to its mailbox's dead letters, dropping the oldest beyond the bound."""
        conn.execute("INSERT INTO dead_letters (id, mailbox, sender, body, sent_at, deliveries, dead_at) "
                     "SELECT id, mailbox, sender, body, sent_at, deliveries, ? FROM messages WHERE id = ?",
                     (dead_at, message_id))
        conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        log.warning("message %d to %s is a dead letter after %d deliveries without ACK",
                    message_id, mailbox, deliveries)
        overflow = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE mailbox = ?",
                                (mailbox,)).fetchone()[0] - self.limits.max_messages
        if overflow > 0:
            conn.execute("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
                         "WHERE mailbox = ? ORDER BY id LIMIT ?)", (mailbox, overflow))
            log.warning("dropped the %d oldest dead letters of %s (more than %d)", overflow,
                        mailbox, self.limits.max_messages)

    @staticmethod
    def _insert(conn: sqlite3.Connection, address: str, sender: str, body: Any, text: str,
                now: float) -> Message:
        cursor = conn.execute("INSERT INTO messages (mailbox, sender, body, sent_at) "
                              "VALUES (?, ?, ?, ?)", (address, sender, text, now))
        return Message(int(cursor.lastrowid or 0), address, sender, body, now)


def _count(section: dict[str, Any], key: str, default: int, most: int | None = None) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (
            most is not None and value > most):
        bound = "" if most is None else f" of at most {most}"
        raise ValueError(f"messaging.{key} must be a positive integer{bound}, got {value!r}")
    return value


def _mailbox_filter(addresses: list[str] | None, keyword: str = "WHERE") -> tuple[str, tuple[str, ...]]:
    """SQL restricting rows to ``addresses`` (nothing if None: every mailbox)."""
    if addresses is None:
        return "", ()
    return f"{keyword} mailbox IN ({','.join('?' * len(addresses))})", tuple(addresses)
