"""The audit log writer and reader on their own."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import ujson

from agentos.audit import AuditLog


def read_records(path: Path, agent: str | None = None, limit: int | None = None, end=None) -> list:
    """What a fresh kernel's log would answer (it indexes the file as it opens it)."""
    log = AuditLog(path)
    log.open()
    try:
        return log.read(agent, limit, end=end)
    finally:
        log.close()


def entry(n: int, agent: str | None = "a1", name: str | None = "alpha") -> dict:
    return {"ts": float(n), "agent": agent, "name": name, "uid": 0, "pid": 1, "op": "STORE",
            "outcome": "ok", "latency_ms": 0.1}


def test_records_append_and_read_back_filtered(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.open()
    log.record(entry(1))
    log.record(entry(2, agent=None, name=None))
    log.record(entry(3, agent="b2", name="beta"))
    log.close()
    assert oct(os.stat(tmp_path / "audit.log").st_mode & 0o777) == "0o600"
    path = tmp_path / "audit.log"
    assert [r["ts"] for r in read_records(path)] == [1.0, 2.0, 3.0]
    assert [r["ts"] for r in read_records(path, agent="alpha")] == [1.0]
    assert [r["ts"] for r in read_records(path, agent="b2")] == [3.0]
    assert [r["ts"] for r in read_records(path, agent="uid:0")] == [1.0, 2.0, 3.0]
    assert [r["ts"] for r in read_records(path, limit=2)] == [2.0, 3.0]


def test_reopening_appends_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    for n in range(3):
        log = AuditLog(path)
        log.open()
        log.record(entry(n))
        log.close()
    assert [r["ts"] for r in read_records(path)] == [0.0, 1.0, 2.0]


def test_buffered_in_a_loop_and_flushed_once_per_iteration(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.open()

    async def burst() -> tuple[int, int]:
        for n in range(100):
            log.record(entry(n))
        unflushed = path.stat().st_size
        await asyncio.sleep(0)
        return unflushed, path.stat().st_size

    unflushed, flushed = asyncio.run(burst())
    log.close()
    assert unflushed == 0 and flushed > 0
    assert len(read_records(path)) == 100


def test_follow_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.open()
    log.record(entry(1))
    log.record(entry(2))  # buffered, not yet written when follow starts
    seen: list[dict] = []
    size, stop = log.follow(seen.append)
    log.record(entry(3))
    log.flush()
    backlog = log.read(end=size)
    stop()
    log.record(entry(4))
    log.close()
    assert [r["ts"] for r in backlog] + [r["ts"] for r in seen] == [1.0, 2.0, 3.0]


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.open()
    log.record(entry(1))
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"ts": 2.0, "agent"')
    assert [r["ts"] for r in read_records(path)] == [1.0]


def test_records_after_close_still_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.open()

    async def shutdown_race() -> None:
        log.record(entry(1))  # schedules a flush for the next loop turn...
        log.close()           # ...but the kernel closes the log first
        log.record(entry(2))  # and one more syscall finishes afterwards
        await asyncio.sleep(0)

    asyncio.run(shutdown_race())
    assert [r["ts"] for r in read_records(path)] == [1.0, 2.0]


@pytest.mark.parametrize("block", [7, 100, 65536])
def test_an_indexed_read_gives_what_a_full_read_gives(tmp_path, block) -> None:
    """The last ``limit`` records up to ``end`` by ``agent`` in [since, until), read through the
    index a block at a time across rotated files, equal a filter of every record written,
    whatever the block size, the record sizes and the file size."""
    import random

    from agentos.audit import AuditSettings, Position, matches

    rng = random.Random(block)
    for trial in range(12):
        directory = tmp_path / str(trial)
        log = AuditLog(directory / "audit.log", AuditSettings(max_size=rng.choice([300, 2000, 1 << 20]),
                                                              compress=trial % 2 == 0, keep=10_000),
                       block_size=block)
        log.open()
        records: list[dict[str, Any]] = [{"ts": float(i), "agent": rng.choice(["a", "b"]), "uid": rng.randint(1, 3),
                    "pad": "x" * rng.randint(0, 300)} for i in range(rng.randint(0, 120))]
        cut = rng.randint(0, len(records))
        for record in records[:cut]:
            log.record(record)
        end = log.flush()
        for record in records[cut:]:
            log.record(record)
        log.settle()
        for _ in range(10):
            bounded = rng.random() < 0.5
            limit = rng.choice([None, 0, 1, 7, 500])
            agent = rng.choice([None, "a", "uid:2"])
            since = rng.choice([None, float(rng.randint(0, 120))])
            until = rng.choice([None, float(rng.randint(0, 120))])
            whole = [r for r in (records[:cut] if bounded else records) if matches(r, agent)
                     and (since is None or r["ts"] >= since) and (until is None or r["ts"] < until)]
            expected = whole[-limit:] if limit else ([] if limit == 0 else whole)
            got = log.read(agent, limit, since, until, end if bounded else None)
            assert got == expected, (trial, bounded, limit, agent, since, until)
        log.close()
        assert isinstance(end, Position)


def test_records_are_written_as_ujson_wrote_them(tmp_path: Path) -> None:
    """Every string byte for byte as before msgspec wrote the log (``/`` as ``\\/``), so a
    search by a project agent's name finds its records in files of either age."""
    path = tmp_path / "audit.log"
    old = entry(1, agent="a1", name="proj/alpha") | {"args": {"key": "caf\u00e9 \u2028 \"q\" \\ /x"}}
    path.write_bytes(ujson.dumps(old, ensure_ascii=False).encode() + b"\n")
    log = AuditLog(path)
    log.open()
    log.record(old | {"ts": 2.0})
    log.close()
    first, second = path.read_bytes().splitlines()
    assert second == first.replace(b'"ts":1.0', b'"ts":2.0')
    assert [r["ts"] for r in read_records(path, agent="proj/alpha")] == [1.0, 2.0]
