"""State and messaging benchmarks against a kernel subprocess.

- STORE latency, one client, one request at a time: each reply waits for an fsync;
- STORE throughput with 256 requests in flight: the writer thread group-commits, so
  many writes share one fsync (the speed-up over sequential is the figure to watch);
- HELLO p99 while a burst of STOREs is in flight: SQLite runs off the event loop, so
  other syscalls wait only behind the loop's own work for one committed batch
  (database.MAX_BATCH), never behind disk I/O (goal: a few ms; idle is ~0.5 ms);
- SEND then RECV round trip between two clients.
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos import AsyncClient, Client
from agentos.testing.kernel import KernelProcess

IN_FLIGHT = 256
BURST = 4000


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelProcess]:
    root = Path(tempfile.mkdtemp(prefix="agentos-bench-state-"))
    k = KernelProcess(root).start()
    try:
        yield k
    finally:
        status = k.stop()
        assert status == 0, k.log()


async def _store_burst(socket_path: Path, count: int, prefix: str) -> float:
    """Seconds to STORE ``count`` keys with IN_FLIGHT requests outstanding."""
    async with await AsyncClient.connect(socket_path) as client:
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def one(n: int) -> None:
            async with semaphore:
                await client.store(f"{prefix}/{n}", {"n": n})

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return time.perf_counter() - started


def test_store_sequential_and_group_commit(benchmark, kernel) -> None:
    with Client(kernel.socket_path) as client:
        sequential = []
        for n in range(300):
            started = time.perf_counter()
            client.store(f"seq/{n}", {"n": n})
            sequential.append(time.perf_counter() - started)
        elapsed = asyncio.run(_store_burst(kernel.socket_path, BURST, "burst"))
        seq_rate = 1 / statistics.mean(sequential)
        burst_rate = BURST / elapsed
        benchmark.extra_info.update({
            "sequential_p50_ms": round(statistics.median(sequential) * 1e3, 3),
            "sequential_ops_s": round(seq_rate), "in_flight": IN_FLIGHT,
            "concurrent_ops_s": round(burst_rate), "group_commit_speedup": round(burst_rate / seq_rate, 1)})
        print(f"\nSTORE: sequential p50 {statistics.median(sequential) * 1e3:.2f} ms "
              f"({seq_rate:.0f}/s); {IN_FLIGHT} in flight {burst_rate:.0f}/s "
              f"(x{burst_rate / seq_rate:.1f} from group commit)")
        benchmark.pedantic(lambda: client.store("bench", 1), rounds=200, warmup_rounds=20)


def test_hello_p99_during_a_store_burst(benchmark, kernel) -> None:
    with Client(kernel.socket_path) as client:
        def hellos(rounds: int) -> list[float]:
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                client.hello()
                samples.append(time.perf_counter() - started)
            return samples

        hellos(100)
        idle = hellos(1000)

        async def during() -> list[float]:
            burst = asyncio.ensure_future(_store_burst(kernel.socket_path, BURST, "during"))
            samples: list[float] = []
            while not burst.done():
                samples.extend(await asyncio.to_thread(hellos, 20))
            await burst
            return samples

        busy = asyncio.run(during())
        benchmark.extra_info.update({
            "idle_p99_ms": round(_p(idle, 0.99) * 1e3, 3), "burst_p99_ms": round(_p(busy, 0.99) * 1e3, 3),
            "burst_samples": len(busy), "goal": "burst p99 of a few ms"})
        print(f"\nHELLO p99: idle {_p(idle, 0.99) * 1e3:.3f} ms, during {BURST} STOREs "
              f"{_p(busy, 0.99) * 1e3:.3f} ms ({len(busy)} samples)")
        benchmark.pedantic(client.hello, rounds=200, warmup_rounds=20)


def test_send_recv_round_trip(benchmark, kernel) -> None:
    with Client(kernel.socket_path) as a, Client(kernel.socket_path) as b:
        b.register("bench-inbox")

        def round_trip() -> None:
            a.send("bench-inbox", "ping")
            b.recv(timeout=10, name="bench-inbox", ack=True)

        benchmark.pedantic(round_trip, rounds=300, warmup_rounds=30)
        benchmark.extra_info["note"] = "SEND (committed) then RECV with ack: two fsynced writes"
