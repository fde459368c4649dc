"""LLM contention demo: several agents think at once; the kernel shares the model fairly.

Spawns ``--agents`` polite agents making ``--calls`` THINKs one at a time and one
greedy agent firing ``--greedy`` THINKs at once, then prints per-agent latency
and tokens. With ``llm.max_inflight`` small (the kernel's fair queue in action),
the polite agents' latency stays near one model call even though the greedy
agent has a long backlog.

Try it offline: ``agentos fake-gemini --delay 0.2`` in one terminal, a kernel
started with the variables it prints plus ``AGENTOS_LLM_CONFIG='{"max_inflight": 2}'``
in another, then ``python llm_contention.py``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import agentos


def worker(calls: int, burst: bool) -> int:
    """One agent: THINK ``calls`` times (all at once when ``burst``) and print the latencies."""
    if burst:
        latencies = asyncio.run(_burst(calls))
    else:
        latencies = []
        with agentos.Client() as kernel:
            kernel.ready()
            for i in range(calls):
                started = time.perf_counter()
                kernel.think(f"polite question {i}").raise_for_error()
                latencies.append(time.perf_counter() - started)
    print(json.dumps({"latencies": latencies}), flush=True)
    return 0


async def _burst(calls: int) -> list[float]:
    # One connection (the one the kernel handed us) carries the agent's identity.
    async with await agentos.AsyncClient.connect() as kernel:
        await kernel.ready()

        async def one(i: int) -> float:
            started = time.perf_counter()
            (await kernel.think(f"greedy question {i}")).raise_for_error()
            return time.perf_counter() - started

        return list(await asyncio.gather(*(one(i) for i in range(calls))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3, help="polite agents")
    parser.add_argument("--calls", type=int, default=5, help="THINKs per polite agent")
    parser.add_argument("--greedy", type=int, default=40, help="THINKs the greedy agent fires at once")
    parser.add_argument("--worker", choices=["polite", "greedy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.greedy if args.worker == "greedy" else args.calls, args.worker == "greedy")
    me = str(Path(__file__).resolve())
    with agentos.Client() as kernel:
        names = ["greedy"] + [f"polite-{i}" for i in range(args.agents)]
        spawned = {}
        for name in names:
            role = "greedy" if name == "greedy" else "polite"
            spawned[name] = kernel.spawn(name, me, args=["--worker", role, "--calls", str(args.calls),
                                                         "--greedy", str(args.greedy)],
                                         sandboxed=False, allow_degraded=True)
        for name in names:
            kernel.wait(name, timeout=600)
        usage = kernel.usage()["agents"]
        print(f"{'agent':<10} {'calls':>5} {'p50 ms':>8} {'max ms':>8} {'tokens':>7}")
        for name in names:
            lines = [ln for ln in kernel.logs(name).splitlines() if ln.startswith("{")]
            if not lines:
                print(f"{name:<10} failed:\n{kernel.logs(name)}")
                continue
            latencies = json.loads(lines[-1])["latencies"]
            tokens = usage.get(f"agent:{spawned[name]['id']}", {}).get("tokens", {}).get("total", 0)
            print(f"{name:<10} {len(latencies):>5} {statistics.median(latencies) * 1e3:>8.1f} "
                  f"{max(latencies) * 1e3:>8.1f} {tokens:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
