"""The SQLite key/value engine on its own: semantics, limits, TTL, concurrency."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentos.errors import InvalidArgument, TooLarge
from agentos.state.database import Database, DatabaseClosed
from agentos.state.store import ABSENT, SCHEMA, KVStore, StateLimits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "state.db", SCHEMA)
    database.open()
    yield database
    database.close()


def run(coro):
    return asyncio.run(coro)


def test_store_fetch_delete_round_trip(db: Database) -> None:
    kv = KVStore(db)

    async def scenario():
        first = await kv.store("a", "k", {"x": [1, 2, "é"]})
        second = await kv.store("a", "k", 7)
        got = await kv.fetch("a", "k")
        other_ns = await kv.fetch("b", "k")
        removed = await kv.delete("a", "k")
        removed_again = await kv.delete("a", "k")
        return first, second, got, other_ns, removed, removed_again, await kv.fetch("a", "k")

    first, second, got, other_ns, removed, removed_again, gone = run(scenario())
    assert (first.version, second.version) == (1, 2)
    assert got.value == 7 and got.version == 2
    assert other_ns is None, "namespaces must not see each other's keys"
    assert removed is True and removed_again is False and gone is None


def test_json_null_is_a_value_not_absence(db: Database) -> None:
    kv = KVStore(db)
    entry = run(kv.store("a", "k", None))
    assert entry.value is None
    fetched = run(kv.fetch("a", "k"))
    assert fetched is not None and fetched.value is None


def test_keys_by_prefix_sorted_and_limited(db: Database) -> None:
    kv = KVStore(db)

    async def scenario():
        for key in ["job/2", "job/1", "jobs", "x", "job/10", "jo"]:
            await kv.store("a", key, 1)
        await kv.store("b", "job/9", 1)
        return (await kv.keys("a", "job/"), await kv.keys("a", "job/", limit=2),
                await kv.keys("a"), await kv.keys("a", "zzz"))

    prefixed, limited, every, none = run(scenario())
    assert prefixed == ["job/1", "job/10", "job/2"]
    assert limited == ["job/1", "job/10"]
    assert every == ["jo", "job/1", "job/10", "job/2", "jobs", "x"]
    assert none == []


def test_ttl_expires_and_is_purged(db: Database) -> None:
    clock = FakeClock()
    kv = KVStore(db, clock=clock)

    async def scenario():
        await kv.store("a", "short", "v", ttl=10)
        await kv.store("a", "forever", "v")
        clock.now += 5
        alive = await kv.fetch("a", "short")
        clock.now += 6
        dead = await kv.fetch("a", "short")
        listed = await kv.keys("a")
        before = await kv.usage("a")
        purged = await kv.purge_expired()
        after = await kv.usage("a")
        return alive, dead, listed, before, purged, after

    alive, dead, listed, before, purged, after = run(scenario())
    assert alive is not None and alive.value == "v"
    assert dead is None
    assert listed == ["forever"]
    assert purged == 1
    assert after == before - len("short") - len('"v"')


def test_cas_on_value_and_on_absence(db: Database) -> None:
    kv = KVStore(db)

    async def scenario():
        created, entry = await kv.cas("a", "lock", ABSENT, {"owner": 1})
        again, current = await kv.cas("a", "lock", ABSENT, {"owner": 2})
        stale, _ = await kv.cas("a", "lock", {"owner": 9}, {"owner": 3})
        swapped, now = await kv.cas("a", "lock", {"owner": 1}, {"owner": 4})
        return created, entry, again, current, stale, swapped, now

    created, entry, again, current, stale, swapped, now = run(scenario())
    assert created and entry.value == {"owner": 1}
    assert not again and current.value == {"owner": 1}
    assert not stale
    assert swapped and now.value == {"owner": 4} and now.version == 2


def test_concurrent_cas_increments_lose_nothing(db: Database) -> None:
    kv = KVStore(db)

    async def incrementer(times: int) -> None:
        done = 0
        while done < times:
            current = await kv.fetch("shared", "n")
            value = current.value if current else 0
            expected = value if current else ABSENT
            ok, _ = await kv.cas("shared", "n", expected, value + 1)
            done += ok

    async def scenario():
        await asyncio.gather(*(incrementer(25) for _ in range(8)))
        return await kv.fetch("shared", "n")

    assert run(scenario()).value == 200


def test_value_and_namespace_size_limits(db: Database) -> None:
    kv = KVStore(db, StateLimits(max_value_bytes=100, max_namespace_bytes=250, max_key_bytes=8))

    async def scenario():
        with pytest.raises(TooLarge):
            await kv.store("a", "big", "x" * 200)
        with pytest.raises(TooLarge):
            await kv.store("a", "k" * 9, 1)
        await kv.store("a", "one", "x" * 90)
        await kv.store("a", "two", "x" * 90)
        with pytest.raises(TooLarge) as exc:
            await kv.store("a", "three", "x" * 90)
        # Overwriting in place reuses the old bytes, so it fits.
        await kv.store("a", "two", "y" * 90)
        # Another namespace has its own budget.
        await kv.store("b", "three", "x" * 90)
        await kv.delete("a", "one")
        await kv.store("a", "three", "x" * 90)
        return exc.value, await kv.keys("a"), await kv.usage("a")

    err, keys, usage = run(scenario())
    assert err.details["limit"] == 250
    assert keys == ["three", "two"]
    assert usage == len("three") + 92 + len("two") + 92


def test_bad_arguments_are_refused(db: Database) -> None:
    kv = KVStore(db)

    async def scenario():
        # Values the wire schema already refuses are refused here too: the engine is its own edge.
        for bad in ("", None, 5, [1], "\udfff"):
            with pytest.raises(InvalidArgument):
                await kv.store("a", bad, 1)
            with pytest.raises(InvalidArgument):
                await kv.fetch("a", bad)
            with pytest.raises(InvalidArgument):
                await kv.delete("a", bad)
        for ttl in (0, -1, "10", True, [1], float("nan"), float("inf"), 10**30):
            with pytest.raises(InvalidArgument):
                await kv.store("a", "k", 1, ttl=ttl)
        for value in ({1, 2}, "\udfff", {"k": ["\ud800"]}, float("nan"), [float("-inf")]):
            with pytest.raises(InvalidArgument):
                await kv.store("a", "k", value)
            with pytest.raises(InvalidArgument):
                await kv.cas("a", "k", ABSENT, value)
        for limit in (0, -1, 10**30, 1.5, True, [1]):
            with pytest.raises(InvalidArgument):
                await kv.keys("a", limit=limit)
        for prefix in (1, None, "\udfff", "x" * 2000):
            with pytest.raises(InvalidArgument):
                await kv.keys("a", prefix=prefix)
        return await kv.keys("a")

    assert run(scenario()) == [], "a refused write must store nothing"


def test_failed_operation_rolls_back_alone_in_a_shared_transaction(db: Database) -> None:
    def insert(ns: str, fail: bool = False):
        def op(conn):
            conn.execute("INSERT INTO usage (ns, bytes) VALUES (?, 1)", (ns,))
            if fail:
                raise ValueError(f"{ns} failed")
            return ns
        return op

    # Hold the thread on a slow first operation so the rest queue into one batch.
    gate = __import__("threading").Event()
    blocker = db.submit(lambda conn: gate.wait(10))
    futures = [db.submit(insert("g1")), db.submit(insert("boom", fail=True)),
               db.submit(insert("g2"))]
    commits_before = db.commits
    gate.set()
    blocker.result()
    assert futures[0].result() == "g1" and futures[2].result() == "g2"
    with pytest.raises(ValueError, match="boom failed"):
        futures[1].result()
    rows = db.call(lambda conn: conn.execute("SELECT ns FROM usage ORDER BY ns").fetchall())
    assert rows == [("g1",), ("g2",)]
    assert db.commits - commits_before <= 3


def test_database_refuses_work_after_close(tmp_path: Path) -> None:
    database = Database(tmp_path / "x.db", SCHEMA)
    database.open()
    database.close()
    with pytest.raises(DatabaseClosed):
        database.submit(lambda conn: None)


def test_database_is_in_wal_mode_with_full_sync(db: Database) -> None:
    mode = db.call(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0])
    sync = db.call(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
    assert mode == "wal" and sync == 2


def test_sqlite_failure_is_unavailable_not_internal(db: Database) -> None:
    from agentos.errors import Unavailable

    async def scenario() -> None:
        await db.run(lambda conn: conn.execute("SELECT * FROM no_such_table"))

    with pytest.raises(Unavailable, match="no such table"):
        run(scenario())
