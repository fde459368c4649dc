"""Durable, bounded mailboxes and the name registry, in SQLite.

A message stays in its mailbox until acknowledged: delivery does not remove it,
so a receiver that dies (or a kernel that is killed) before ACK gets it again.
Which messages a reader has already been handed is the reader's cursor, kept
by the caller (``after_id``), not here. A mailbox holds at most
``max_messages``; a send into a full one raises ``Busy`` and stores nothing.
"""
from __future__ import annotations

import concurrent.futures
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ujson

from ..errors import AlreadyExists, Busy, PermissionDenied, TooLarge
from ..state.database import Database, encode_bounded
from ..units import parse_bytes

#: Names one caller (agent or client) may hold at once.
MAX_NAMES_PER_OWNER = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_mailbox ON messages(mailbox, id);
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

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> MailboxLimits:
        """Read ``mailbox_size`` (a count) and ``max_message`` (a size like ``256Ki``)."""
        defaults = cls()
        size = section.get("mailbox_size", defaults.max_messages)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"messaging.mailbox_size must be a positive integer, got {size!r}")
        return cls(max_messages=size,
                   max_message_bytes=parse_bytes(section.get("max_message",
                                                             defaults.max_message_bytes),
                                                 "messaging.max_message"))


@dataclass(frozen=True)
class Message:
    """One stored message."""

    id: int
    mailbox: str
    sender: str
    body: Any
    sent_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.mailbox, "from": self.sender, "body": self.body,
                "sent_at": self.sent_at}


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

    async def next(self, addresses: list[str], after_id: int = 0) -> Message | None:
        """The oldest unacknowledged message to any of ``addresses`` with id > ``after_id``."""
        marks = ",".join("?" * len(addresses))

        def select(conn: sqlite3.Connection) -> Message | None:
            row = conn.execute(
                f"SELECT id, mailbox, sender, body, sent_at FROM messages "
                f"WHERE mailbox IN ({marks}) AND id > ? ORDER BY id LIMIT 1",
                (*addresses, after_id)).fetchone()
            return None if row is None else Message(row[0], row[1], row[2],
                                                    ujson.loads(row[3]), row[4])

        return await self._db.run(select)

    async def ack(self, addresses: list[str], ids: list[int]) -> list[int]:
        """Remove messages ``ids`` if they are in one of ``addresses``; returns those removed."""
        marks = ",".join("?" * len(addresses))

        def delete(conn: sqlite3.Connection) -> list[int]:
            removed = []
            for message_id in ids:
                row = conn.execute(f"DELETE FROM messages WHERE id = ? AND mailbox IN ({marks}) "
                                   "RETURNING id", (message_id, *addresses)).fetchone()
                if row is not None:
                    removed.append(row[0])
            return removed

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

    # -- on the database thread ---------------------------------------------------

    @staticmethod
    def _count(conn: sqlite3.Connection, address: str) -> int:
        return conn.execute("SELECT COUNT(*) FROM messages WHERE mailbox = ?",
                            (address,)).fetchone()[0]

    @staticmethod
    def _insert(conn: sqlite3.Connection, address: str, sender: str, body: Any, text: str,
                now: float) -> Message:
        cursor = conn.execute("INSERT INTO messages (mailbox, sender, body, sent_at) "
                              "VALUES (?, ?, ?, ?)", (address, sender, text, now))
        return Message(int(cursor.lastrowid or 0), address, sender, body, now)
