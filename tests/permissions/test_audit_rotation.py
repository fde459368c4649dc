"""audit.log rotation, compression, retention and indexed reads (``audit`` settings), alone and in
a kernel: records across many files read back exactly, a query costs what it returns, every file
is 0600, and a crash at any step of a rotation loses and repeats nothing."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentos.audit import AuditLog, AuditSettings, matches
from agentos.audit import log as audit_log
from agentos.testing.kernel import KernelProcess

T0 = 1_700_000_000.0


def entry(n: int, agent: str = "a1", name: str = "alpha", uid: int = 0) -> dict:
    # Fixed-width fields: every record the same size, so two logs differ only in how many they hold.
    return {"ts": T0 + n, "agent": agent, "name": name, "uid": uid, "pid": 1, "op": "STORE",
            "outcome": "ok", "latency_ms": 0.1, "n": f"{n:08d}"}


def who(n: int) -> tuple[str, str, int]:
    """Three busy agents, and a rare one every 500th record."""
    if n % 500 == 499:
        return "rare99", "rare", 7
    return f"a{n % 3}", f"agent{n % 3}", n % 2


def fill(log: AuditLog, count: int) -> list[dict]:
    records = [entry(n, *who(n)) for n in range(count)]
    for record in records:
        log.record(record)
    log.settle()
    return records


def opened(path: Path, **settings: object) -> AuditLog:
    log = AuditLog(path, AuditSettings.from_section(settings), block_size=512)
    log.open()
    return log


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_rotated_compressed_files_read_back_exactly_by_agent_time_and_limit(tmp_path: Path) -> None:
    log = opened(tmp_path / "audit.log", max_size=4096, keep=1000)
    records = fill(log, 2000)
    names = sorted(p.name for p in tmp_path.iterdir())
    rotated = [n for n in names if n.endswith(".gz")]
    assert len(rotated) >= 3 and all(f"{n}.idx" in names for n in rotated)
    assert not [n for n in names if n.endswith((".tmp",)) or n.rstrip("0123456789").endswith(".log.")]
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir())
    # Plain gzip to any tool: the files, oldest first, then the current one, are the records in order.
    ordered = sorted(rotated, key=lambda n: int(n.split(".")[2]))
    data = b"".join(gzip.decompress((tmp_path / n).read_bytes()) for n in ordered)
    data += (tmp_path / "audit.log").read_bytes()
    assert [json.loads(line) for line in data.splitlines()] == records

    def expected(agent: str | None = None, limit: int | None = None, since: float | None = None,
                 until: float | None = None) -> list[dict]:
        found = [r for r in records if matches(r, agent) and (since is None or r["ts"] >= since)
                 and (until is None or r["ts"] < until)]
        return found[-limit:] if limit else found

    for query in ({}, {"limit": 1}, {"limit": 150}, {"agent": "a1"}, {"agent": "agent2", "limit": 700},
                  {"agent": "uid:1", "limit": 5}, {"agent": "rare"}, {"agent": "rare99", "limit": 2},
                  {"since": T0 + 100, "until": T0 + 1300}, {"agent": "a0", "since": T0 + 17, "until": T0 + 40},
                  {"since": T0 + 1999}, {"until": T0 + 3, "limit": 2}, {"agent": "nobody"}):
        assert log.read(**query) == expected(**query), query
    log.close()
    # A new log on the same files (a restarted kernel) reads the same.
    again = opened(tmp_path / "audit.log", max_size=4096, keep=1000)
    assert again.read(agent="rare") == expected(agent="rare") and len(again.read()) == 2000
    again.close()


def test_a_querys_work_does_not_grow_with_the_log(tmp_path: Path) -> None:
    """The same queries against 2,000 and 40,000 records read the same blocks, within one."""
    work = {}
    for count in (2_000, 40_000):
        log = opened(tmp_path / str(count) / "audit.log", max_size=16384, keep=100_000)
        fill(log, count)
        end = T0 + count
        costs = []
        for query in ({"limit": 10}, {"agent": "rare", "limit": 3}, {"agent": "a1", "limit": 50},
                      {"since": end - 300, "until": end - 280}, {"agent": "uid:7", "since": end - 1200}):
            before = audit_log.Work(**vars(log.work))
            found = log.read(**query)
            assert found, query
            costs.append((log.work.blocks - before.blocks, log.work.records - before.records))
        work[count] = costs
        log.close()
    for (small_blocks, small_records), (big_blocks, big_records) in zip(work[2_000], work[40_000]):
        assert big_blocks <= small_blocks + 1 and big_records <= small_records + 12, work
    # Reading every record would parse them all; the largest query here parsed a handful of blocks'.
    assert max(records for _, records in work[40_000]) < 200, work


def test_retention_by_count_and_by_age(tmp_path: Path) -> None:
    log = opened(tmp_path / "audit.log", max_size=4096, keep=3, max_age="1h")
    records = fill(log, 1000)
    rotated = sorted(tmp_path.glob("audit.log.*.gz"), key=lambda p: int(p.name.split(".")[2]))
    assert len(rotated) == 3 and len(list(tmp_path.glob("*.idx"))) == 3
    kept = log.read()
    assert kept == records[-len(kept):] and len(kept) < 1000  # the newest, contiguous
    # The oldest kept file was last written two hours ago: past max_age.
    two_hours_ago = time.time() - 7200
    os.utime(rotated[0], (two_hours_ago, two_hours_ago))
    log.maintain()
    log.settle()
    assert not rotated[0].exists() and not Path(f"{rotated[0]}.idx").exists()
    assert rotated[1].exists() and rotated[2].exists()
    after = log.read()
    assert after == records[-len(after):] and len(after) < len(kept)
    log.close()


def test_an_old_current_file_is_rotated_however_small(tmp_path: Path) -> None:
    log = opened(tmp_path / "audit.log", rotate_every="1h")
    log.record(entry(0))
    log.maintain(now=T0 + 1800)
    assert not list(tmp_path.glob("audit.log.*"))
    log.maintain(now=T0 + 3601)
    log.settle()
    assert sorted(p.name for p in tmp_path.glob("audit.log.*")) == ["audit.log.1.gz", "audit.log.1.gz.idx"]
    assert (tmp_path / "audit.log").stat().st_size == 0 and log.read() == [entry(0)]
    log.close()


def test_uncompressed_rotation_keeps_plain_files_indexed(tmp_path: Path) -> None:
    log = opened(tmp_path / "audit.log", max_size=4096, compress=False)
    records = fill(log, 500)
    assert not list(tmp_path.glob("*.gz")) and len(list(tmp_path.glob("audit.log.*.idx"))) >= 3
    assert log.read(agent="a2", limit=40) == [r for r in records if r["agent"] == "a2"][-40:]
    log.close()


def test_a_read_reads_the_file_it_opened_when_the_worker_compresses_it_meanwhile(tmp_path: Path) -> None:
    """The worker compresses a rotated file right after a reader opened it (plain): the reader
    reads the plain file it holds as plain (it decompressed it, and failed, when it asked the
    segment, which says compressed by then). Deterministic: the worker waits for the reader."""
    class Racing(AuditLog):
        reader_has_it = threading.Event()

        def _finish(self, segment: audit_log.Segment) -> None:
            self.reader_has_it.wait(30)
            super()._finish(segment)

        def _open(self, segment: audit_log.Segment) -> tuple[object, audit_log.Index, bool] | None:
            opened = super()._open(segment)
            if opened is not None and not segment.compressed and segment is not self._segments[-1]:
                self.reader_has_it.set()
                self.settle()  # the worker compresses it now, before the reader reads
                assert segment.compressed
            return opened

    log = Racing(tmp_path / "audit.log", AuditSettings.from_section({"max_size": 4096}), block_size=512)
    log.open()
    records = [entry(n, *who(n)) for n in range(200)]
    for record in records:
        log.record(record)
    log.flush()
    assert log.read() == records
    log.close()


class Crash(BaseException):
    """The worker thread stops here, as if the process died (its later steps never run)."""


@pytest.mark.parametrize("step", range(9))
def test_a_crash_at_any_step_of_a_rotation_loses_and_repeats_nothing(tmp_path: Path, monkeypatch, step: int) -> None:
    """Each file operation of the worker's compression (fsyncs, renames, unlinks), in turn, is
    where the process dies; a new log on the same directory has every record exactly once."""
    log = opened(tmp_path / "audit.log", max_size=1 << 30)
    records = fill(log, 300)
    calls = {"n": 0}
    real = {name: getattr(os, name) for name in ("fsync", "rename", "unlink")}

    def dying(name: str):
        def call(*args):
            calls["n"] += 1
            if calls["n"] > step:
                raise Crash(name)
            return real[name](*args)
        return call

    for name in real:
        monkeypatch.setattr(os, name, dying(name))
    try:
        log.rotate()  # the loop's part, one rename: step 0 dies before it
        log.settle()  # the worker's: compression, then its renames and unlinks
    except Crash:
        pass
    monkeypatch.undo()
    # The process is dead: nothing of it runs again. A new kernel opens the same files.
    log.close()
    more = [entry(n) for n in range(300, 310)]
    again = opened(tmp_path / "audit.log", max_size=1 << 30)
    for record in more:
        again.record(record)
    again.settle()
    assert again.read() == records + more, step
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("audit.log.[0-9]"))
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir())
    again.close()


WRITER = """
import sys, time
from agentos.audit import AuditLog, AuditSettings
log = AuditLog(sys.argv[1], AuditSettings(max_size=2048, keep=100000), block_size=256)
log.open()
last = log.read(limit=1)
n = last[0]["n"] + 1 if last else 0
print("ready", flush=True)
while True:
    log.record({"ts": time.time(), "agent": "w", "n": n, "pad": "x" * (n % 50)})
    n += 1
"""


def test_sigkill_while_rotating_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """A writer rotating every few dozen records is SIGKILLed, again and again, wherever it is:
    the records on disk are always 0..n, each once, in order."""
    rng = random.Random(17)
    path = tmp_path / "audit.log"
    for _ in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    log = opened(path, max_size=2048, keep=100000)
    numbers = [r["n"] for r in log.read()]
    log.close()
    assert len(numbers) > 100 and numbers == list(range(len(numbers)))
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir())


@pytest.mark.parametrize("section, key", [
    ({"max_size": "lots"}, "audit.max_size"), ({"keep": 0}, "audit.keep"), ({"max_age": "-1s"}, "audit.max_age"),
    ({"rotate_every": 0}, "audit.rotate_every"), ({"compress": "yes"}, "audit.compress"), ({"size": 1}, "audit"),
])
def test_a_bad_setting_names_its_key(section: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        AuditSettings.from_section(section)


MANIFEST = """\
version: 1
kernel:
  audit: {max_size: 2Ki, keep: 1000}
agents:
  unused: {command: [sh, -c, 'true']}
"""


def test_a_kernel_rotates_its_audit_log_and_reads_across_the_files(tmp_path: Path) -> None:
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text(MANIFEST)
    kernel = KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]).start()
    try:
        client = kernel.client()
        for n in range(120):
            client.store(f"key{n}", n)
        stores = [r for r in client.audit(limit=1000) if r["op"] == "STORE"]
        assert [r["args"]["key"] for r in stores] == [f"key{n}" for n in range(120)]
        state = kernel.state_dir
        rotated = list(state.glob("audit.log.*.gz"))
        assert len(rotated) >= 3 and all(mode(p) == 0o600 for p in state.glob("audit.log*"))
        # A time window and a limit, across files.
        window = list(client.audit(since=stores[30]["ts"], until=stores[90]["ts"], limit=1000))
        assert [r["args"]["key"] for r in window if r["op"] == "STORE"] == [f"key{n}" for n in range(30, 90)]
        last = client.audit(agent="uid:0", limit=2, until=stores[-1]["ts"] + 1e-6)
        assert [r["args"]["key"] for r in last] == ["key118", "key119"]
        env = {**os.environ, "AGENTOS_SOCKET": str(kernel.socket_path)}
        out = subprocess.run([sys.executable, "-m", "agentos", "audit", "--json", "-n", "1000",
                              "--since", str(stores[0]["ts"]), "--until", str(stores[60]["ts"])],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        keys = [json.loads(line)["args"]["key"] for line in out.stdout.splitlines()
                if json.loads(line)["op"] == "STORE"]
        assert keys == [f"key{n}" for n in range(60)]
        bad = subprocess.run([sys.executable, "-m", "agentos", "audit", "--since", "yesterday"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert bad.returncode == 2 and "--since" in bad.stderr
        kernel.restart()
        client = kernel.client()
        again = [r for r in client.audit(limit=1000) if r["op"] == "STORE"]
        assert [r["args"]["key"] for r in again] == [f"key{n}" for n in range(120)]
    finally:
        kernel.stop_checked()
