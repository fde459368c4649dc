"""AUDIT's cost against the log's size (issue 17): with the log indexed, a query costs what it
returns, so the median AUDIT with 1,000,000 records in the log (rotated and gzipped files plus the
current one) should be close to that with 10,000. Before the index, every AUDIT read and parsed
the whole log backwards until it had its records (an agent's, a time window's: all of it), and
200 ``AUDIT {}`` calls against a 124 MB log did not finish in 128 s.

For each size, a log of that many kernel-shaped records (1,000 agents, three outside uids) is
written into a fresh state dir by the audit log itself (default settings: 64 MiB files, gzip),
then a kernel is started on it and, from one client, measured: ``AUDIT {limit: 100}`` (200
calls), the last 10 records of one of the 1,000 agents (50 calls: the 10,000-record log holds
exactly 10 of each, so both sizes return the same), and a one-minute window from the middle of
the log (50 calls). Reported: each median and the ratio 1M / 10k (goal: <= 2x).

Run: ``.venv/bin/python -m pytest benchmarks/bench_audit.py -p no:cacheprovider -s`` (about a
minute; or ``python benchmarks/bench_audit.py``). ``AUDIT_BENCH_RECORDS=10000,1000000`` sets the sizes.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentos.audit import AuditLog
from agentos.testing.kernel import KernelProcess

SIZES = [int(n) for n in os.environ.get("AUDIT_BENCH_RECORDS", "10000,1000000").split(",")]
T0 = time.time() - 30 * 24 * 3600  # a month ago, one record every 10 ms of "then"


def write_log(path: Path, count: int) -> int:
    """``count`` records as a busy kernel writes them; returns the bytes written."""
    log = AuditLog(path)
    log.open()

    async def fill() -> None:
        for n in range(count):
            agent = n % 1000
            log.record({"ts": round(T0 + n * 0.01, 6), "agent": f"{agent:012x}", "name": f"worker-{agent}",
                        "uid": 1000 + n % 3, "pid": 4000 + agent, "op": ("STORE", "SEND", "FETCH", "THINK")[n % 4],
                        "outcome": "ok", "latency_ms": 0.123, "args": {"scope": "own", "key": f"k{n % 97}"}})
            if n % 1000 == 999:
                await asyncio.sleep(0)  # one write per thousand, as the loop's flush would do

    asyncio.run(fill())
    log.close()
    log = AuditLog(path)
    log.open()  # a restart: finishes compressing what close left to the next start
    log.settle()
    log.close()
    return sum(p.stat().st_size for p in path.parent.glob("audit.log*"))


def median_ms(calls: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as root:
        state = Path(root) / "k" / "state"
        state.mkdir(parents=True)
        disk = write_log(state / "audit.log", count)
        kernel = KernelProcess(Path(root) / "k").start()
        try:
            client = kernel.client(timeout=600)
            middle = T0 + count * 0.005
            figures = {
                "records": count, "disk_mb": disk / 1e6,
                "last 100": median_ms(200, lambda: list(client.audit(limit=100))),
                "agent's last 10": median_ms(50, lambda: list(client.audit("worker-7", limit=10))),
                "1-minute window": median_ms(50, lambda: list(client.audit(since=middle, until=middle + 60,
                                                                           limit=1_000_000))),
            }
        finally:
            kernel.stop_checked()
    return figures


def test_audit_cost_does_not_follow_the_log_size() -> None:
    results = [measure(count) for count in SIZES]
    small, big = results[0], results[-1]
    print(f"\nAUDIT median ms (records in the log: {small['records']:,} vs {big['records']:,}; "
          f"on disk {small['disk_mb']:.1f} MB vs {big['disk_mb']:.1f} MB)")
    for key in ("last 100", "agent's last 10", "1-minute window"):
        ratio = big[key] / small[key]
        print(f"  {key:<18} {small[key]:8.2f} {big[key]:8.2f}   x{ratio:.2f}  "
              f"{'met' if ratio <= 2 else 'NOT MET'} (goal <= 2x)")


if __name__ == "__main__":
    test_audit_cost_does_not_follow_the_log_size()
