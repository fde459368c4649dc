"""What telemetry costs: the same THINK and NOOP through a kernel without it and through one with
traces on (exported over OTLP/HTTP to a local sink), the Prometheus endpoint on and metrics
exported over OTLP too (the same sink, every 60 s), side by side in one run.

- THINK: p50 through each kernel, alternating call by call (the model is ``fake_models.py`` in
  its own process, shared); the traced kernel's extra p50 is the median over blocks of the
  difference of block medians (goal <= 0.05 ms), reported with the ratio of the two p50s;
- NOOP: p50 through each kernel, alternating; the reactor answers NOOPs in C whatever
  telemetry does, so the goal is the same p50 (ratio <= 1.05; NOOPs are not traced).

Goals are reported, not asserted: timing on a shared machine is noisy.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_think import KEY, MODEL, FakeProcess
from harness import PYTHON, Goals, process_cpu_ns

from agentos import AsyncClient
from agentos.testing.kernel import KernelProcess

HERE = Path(__file__).resolve().parent
BLOCKS = 5
THINK_PAIRS = 300
NOOP_PAIRS = 3000


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


class Sink:
    """An OTLP/HTTP endpoint that accepts every export (this file run with ``--sink``), in its
    own process, so receiving spans costs the kernel nothing but sending them."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([*PYTHON, str(Path(__file__)), "--sink"], stdout=subprocess.PIPE,
                                     text=True)
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("listening on "):
                self.url = line.removeprefix("listening on ").strip()
                return
        raise RuntimeError(f"the OTLP sink exited with {self.proc.wait()} at start")

    def stop(self) -> int:
        """Stop it; the number of export requests it received."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return int(out.split()[-1]) if out.split() else 0


def _kernel(fake: FakeProcess, prefix: str, env: dict[str, str], args: list[str]) -> KernelProcess:
    root = Path(tempfile.mkdtemp(prefix=f"agentos-bench-{prefix}-"))
    return KernelProcess(root, env={"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": KEY,
                                    "GOOGLE_API_KEY": "", "AGENTOS_GEMINI_MODEL": MODEL, **env},
                         args=args).start()


@pytest.fixture(scope="module")
def kernels() -> Iterator[tuple[KernelProcess, KernelProcess, Sink]]:
    fake = FakeProcess()
    sink = Sink()
    plain = traced = None
    try:
        fake.prepare()
        plain = _kernel(fake, "plain", {"OTEL_SDK_DISABLED": "true"}, [])
        traced = _kernel(fake, "traced", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url},
                         ["--otel", "--metrics", "127.0.0.1:0"])
        yield plain, traced, sink
    finally:
        for kernel in (plain, traced):
            if kernel is not None:
                assert kernel.stop() == 0, kernel.log()
        sink.stop()
        fake.stop()


async def _alternate(plain: AsyncClient, traced: AsyncClient, call: Any, pairs: int,
                     warmup: int) -> tuple[list[list[float]], list[list[float]]]:
    """``call(client)`` through each kernel in turn, BLOCKS blocks of ``pairs``, timed."""
    async def timed(client: AsyncClient) -> float:
        started = time.perf_counter()
        await call(client)
        return time.perf_counter() - started

    for _ in range(warmup):
        await timed(plain)
        await timed(traced)
    off: list[list[float]] = []
    on: list[list[float]] = []
    for _ in range(BLOCKS):
        off.append([])
        on.append([])
        for _ in range(pairs):
            off[-1].append(await timed(plain))
            on[-1].append(await timed(traced))
    return off, on


def _report(goals: Goals, benchmark: Any, what: str, off: list[list[float]], on: list[list[float]],
            added_goal: float | None, ratio_goal: float | None) -> dict[str, Any]:
    off_p50 = statistics.median(s for block in off for s in block)
    on_p50 = statistics.median(s for block in on for s in block)
    added = statistics.median(sorted(statistics.median(b) - statistics.median(a) for a, b in zip(off, on)))
    ratio = on_p50 / off_p50
    figures = {f"{what}_off_p50_ms": _ms(off_p50), f"{what}_on_p50_ms": _ms(on_p50),
               f"{what}_added_p50_ms": _ms(added), f"{what}_ratio": round(ratio, 3)}
    detail = (f"off {off_p50 * 1e3:.3f} ms, on {on_p50 * 1e3:.3f} ms, ratio {ratio:.3f}; median of "
              f"{len(off)} blocks of {len(off[0])} alternating pairs")
    if added_goal is not None:
        goals.add(f"{what} added by telemetry p50", f"{added * 1e3:.3f} ms", f"<= {added_goal * 1e3:g} ms",
                  added <= added_goal, detail)
    if ratio_goal is not None:
        goals.add(f"{what} p50 with telemetry / without", f"{ratio:.3f}x", f"<= {ratio_goal}x",
                  ratio <= ratio_goal, detail)
    return figures


def test_telemetry_cost(benchmark: Any, kernels: Any, goals: Goals) -> None:
    plain_kernel, traced_kernel, sink = kernels

    async def think(client: AsyncClient) -> None:
        reply = await client.think("ping")
        assert reply.success, reply.error

    async def noop(client: AsyncClient) -> None:
        await client.noop(b"x")

    async def measure() -> tuple[Any, Any]:
        async with await AsyncClient.connect(plain_kernel.socket_path) as plain, \
                await AsyncClient.connect(traced_kernel.socket_path) as traced:
            hello = await traced.hello()
            assert hello["capabilities"]["telemetry"]["traces"] is True
            cpu_before = process_cpu_ns(plain_kernel.pid), process_cpu_ns(traced_kernel.pid)
            thinks = await _alternate(plain, traced, think, THINK_PAIRS, 100)
            cpu.extend([process_cpu_ns(plain_kernel.pid) - cpu_before[0],
                        process_cpu_ns(traced_kernel.pid) - cpu_before[1]])
            noops = await _alternate(plain, traced, noop, NOOP_PAIRS, 500)
            return thinks, noops

    cpu: list[int] = []
    (think_off, think_on), (noop_off, noop_on) = asyncio.run(measure())
    think_report = _report(goals, benchmark, "THINK", think_off, think_on, added_goal=0.05e-3, ratio_goal=None)
    # Kernel CPU per THINK (all threads: the span exporter's too), warm-up calls included.
    calls = BLOCKS * THINK_PAIRS + 100
    think_report.update(THINK_cpu_off_us=round(cpu[0] / calls / 1e3, 1),
                        THINK_cpu_on_us=round(cpu[1] / calls / 1e3, 1))
    benchmark.extra_info.update(think_report)
    print(json.dumps(think_report))
    noop_report = _report(goals, benchmark, "NOOP", noop_off, noop_on, added_goal=None, ratio_goal=1.05)
    benchmark.extra_info.update(noop_report)
    print(json.dumps(noop_report))
    benchmark.pedantic(lambda: None, rounds=1)


def _serve_sink() -> None:
    """``--sink``: answer every OTLP/HTTP export with an empty success; print how many at exit."""
    import signal

    from aiohttp import web

    received = 0

    async def export(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", export)
        app.router.add_post("/v1/metrics", export)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        print(received, flush=True)

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:] == ["--sink"]:
    _serve_sink()
