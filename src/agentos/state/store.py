"""The key/value engine behind STORE/FETCH/DELETE/KEYS/CAS.

Keys live in namespaces (one per agent, plus ``shared``); values are JSON.
Each namespace has a byte budget kept in the ``usage`` table inside the same
transaction as the write, so the limit holds exactly, even under concurrency.
Expiry uses wall-clock time so a TTL keeps counting across kernel restarts.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ujson

from ..errors import InvalidArgument, TooLarge
from ..units import parse_bytes
from .database import Database, check_text, encode_bounded

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    size INTEGER NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage (
    ns TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
"""

#: Most keys one KEYS returns: with keys up to ``max_key`` long the reply stays a few MiB.
MAX_KEYS = 10_000

#: Stands for "the key does not exist" where ``None`` would mean JSON null.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


@dataclass(frozen=True)
class StateLimits:
    """Size limits; a namespace's usage counts the UTF-8 bytes of its keys and values."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_namespace_bytes: int = 64 * 1024 * 1024
    max_ttl_s: float = 10 * 365 * 86400.0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> StateLimits:
        """Read ``max_value``/``max_agent``/``max_key`` (sizes like ``1Mi``) from config."""
        defaults = cls()
        return cls(
            max_key_bytes=parse_bytes(section.get("max_key", defaults.max_key_bytes), "state.max_key"),
            max_value_bytes=parse_bytes(section.get("max_value", defaults.max_value_bytes),
                                        "state.max_value"),
            max_namespace_bytes=parse_bytes(section.get("max_agent", defaults.max_namespace_bytes),
                                            "state.max_agent"),
        )


@dataclass(frozen=True)
class Entry:
    """A live value as FETCH returns it."""

    key: str
    value: Any
    version: int
    expires_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "version": self.version,
                "expires_at": self.expires_at}


class KVStore:
    """Namespaced JSON key/value store with TTLs, CAS and byte budgets."""

    def __init__(self, db: Database, limits: StateLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.limits = limits or StateLimits()
        self._clock = clock

    # -- public operations ------------------------------------------------------

    async def store(self, ns: str, key: str, value: Any, ttl: float | None = None) -> Entry:
        """Set ``key`` to ``value`` (expiring after ``ttl`` seconds if given)."""
        self._check_key(key)
        text = self._encode(value)
        expires_at = self._expiry(ttl)
        return await self._db.run(lambda conn: self._put(conn, ns, key, value, text, expires_at))

    async def fetch(self, ns: str, key: str) -> Entry | None:
        """The live entry for ``key``, or None if missing or expired."""
        self._check_key(key)
        return await self._db.run(lambda conn: self._get(conn, ns, key))

    async def delete(self, ns: str, key: str) -> bool:
        """Remove ``key``; True if a live value was removed."""
        self._check_key(key)
        return await self._db.run(lambda conn: self._remove(conn, ns, key))

    async def keys(self, ns: str, prefix: str = "", limit: int = 1000) -> list[str]:
        """Live keys starting with ``prefix``, sorted, at most ``limit``."""
        if prefix:
            check_text(prefix, "prefix", self.limits.max_key_bytes)
        elif not isinstance(prefix, str):
            raise InvalidArgument(f"prefix must be a string, got {prefix!r}", field="prefix")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_KEYS:
            raise InvalidArgument(f"limit must be an integer from 1 to {MAX_KEYS}, got {limit!r}",
                                  field="limit")
        return await self._db.run(lambda conn: self._list(conn, ns, prefix, limit))

    async def cas(self, ns: str, key: str, expected: Any, value: Any,
                  ttl: float | None = None) -> tuple[bool, Entry | None]:
        """Set ``key`` to ``value`` only if its current value equals ``expected``
        (``ABSENT``: only if the key does not exist). Returns (swapped, entry now)."""
        self._check_key(key)
        text = self._encode(value)
        expires_at = self._expiry(ttl)

        def swap(conn: sqlite3.Connection) -> tuple[bool, Entry | None]:
            current = self._get(conn, ns, key)
            matches = current is None if expected is ABSENT else (
                current is not None and current.value == expected)
            if not matches:
                return False, current
            return True, self._put(conn, ns, key, value, text, expires_at)

        return await self._db.run(swap)

    async def usage(self, ns: str) -> int:
        """Bytes ``ns`` holds, expired-but-unswept entries included."""
        return await self._db.run(lambda conn: self._usage(conn, ns))

    async def purge_expired(self) -> int:
        """Delete every expired entry and give its bytes back; returns how many."""
        now = self._clock()

        def purge(conn: sqlite3.Connection) -> int:
            rows = conn.execute("DELETE FROM kv WHERE expires_at <= ? RETURNING ns, size",
                                (now,)).fetchall()
            freed: dict[str, int] = {}
            for ns, size in rows:
                freed[ns] = freed.get(ns, 0) + size
            for ns, size in freed.items():
                self._add_usage(conn, ns, -size)
            return len(rows)

        return await self._db.run(purge)

    async def purge(self, patterns: tuple[str, ...]) -> int:
        """Delete every key of the namespaces matching any of the GLOB ``patterns``, with their
        byte counts; returns how many keys."""
        where = " OR ".join("ns GLOB ?" for _ in patterns)

        def wipe(conn: sqlite3.Connection) -> int:
            removed = conn.execute(f"DELETE FROM kv WHERE {where}", patterns).rowcount
            conn.execute(f"DELETE FROM usage WHERE {where}", patterns)
            return int(removed)

        return await self._db.run(wipe)

    # -- validation -------------------------------------------------------------

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"key must be a non-empty string, got {key!r}", field="key")
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise InvalidArgument("key must be UTF-8 text (it has a lone surrogate)", field="key") from None
        if size > self.limits.max_key_bytes:
            raise TooLarge(f"key is longer than {self.limits.max_key_bytes} bytes",
                           limit=self.limits.max_key_bytes)

    def _encode(self, value: Any) -> str:
        return encode_bounded(value, self.limits.max_value_bytes, "value")

    def _expiry(self, ttl: Any) -> float | None:
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidArgument(f"ttl must be a positive number of seconds, got {ttl!r}", field="ttl")
        if ttl > self.limits.max_ttl_s:
            raise InvalidArgument(f"ttl over the {self.limits.max_ttl_s:.0f}s maximum", field="ttl")
        return self._clock() + float(ttl)

    # -- on the database thread -------------------------------------------------

    def _get(self, conn: sqlite3.Connection, ns: str, key: str) -> Entry | None:
        row = conn.execute("SELECT value, version, expires_at FROM kv WHERE ns = ? AND key = ?",
                           (ns, key)).fetchone()
        if row is None or (row[2] is not None and row[2] <= self._clock()):
            return None
        return Entry(key, ujson.loads(row[0]), row[1], row[2])

    def _put(self, conn: sqlite3.Connection, ns: str, key: str, value: Any, text: str,
             expires_at: float | None) -> Entry:
        size = len(key.encode()) + len(text.encode())
        old = conn.execute("SELECT size, version FROM kv WHERE ns = ? AND key = ?",
                           (ns, key)).fetchone()
        old_size, old_version = old if old else (0, 0)
        total = self._usage(conn, ns) - old_size + size
        if total > self.limits.max_namespace_bytes:
            raise TooLarge(f"storing {key!r} would put {ns} at {total} bytes, over its "
                           f"{self.limits.max_namespace_bytes}-byte limit",
                           limit=self.limits.max_namespace_bytes)
        version = old_version + 1
        conn.execute("INSERT OR REPLACE INTO kv (ns, key, value, size, version, expires_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (ns, key, text, size, version, expires_at))
        self._add_usage(conn, ns, size - old_size)
        return Entry(key, value, version, expires_at)

    def _remove(self, conn: sqlite3.Connection, ns: str, key: str) -> bool:
        row = conn.execute("DELETE FROM kv WHERE ns = ? AND key = ? RETURNING size, expires_at",
                           (ns, key)).fetchone()
        if row is None:
            return False
        self._add_usage(conn, ns, -row[0])
        return row[1] is None or row[1] > self._clock()

    def _list(self, conn: sqlite3.Connection, ns: str, prefix: str, limit: int) -> list[str]:
        # The range bound lets SQLite walk the primary key; substr() makes it exact.
        rows = conn.execute(
            "SELECT key FROM kv WHERE ns = ? AND key >= ? AND substr(key, 1, ?) = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
            (ns, prefix, len(prefix), prefix, self._clock(), limit)).fetchall()
        return [row[0] for row in rows]

    @staticmethod
    def _usage(conn: sqlite3.Connection, ns: str) -> int:
        row = conn.execute("SELECT bytes FROM usage WHERE ns = ?", (ns,)).fetchone()
        return row[0] if row else 0

    @staticmethod
    def _add_usage(conn: sqlite3.Connection, ns: str, delta: int) -> None:
        conn.execute("INSERT INTO usage (ns, bytes) VALUES (?, ?) "
                     "ON CONFLICT(ns) DO UPDATE SET bytes = bytes + excluded.bytes", (ns, delta))
