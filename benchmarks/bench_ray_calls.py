"""The floor under the cluster bridge: what bare Ray actor calls cost on this machine (docs/cluster.md).

usage (root; Ray must see only loopback, so in a network namespace of its own):
    unshare --net sh -c 'ip link set lo up && .venv/bin/python benchmarks/bench_ray_calls.py'

A two-node ``ray.cluster_utils.Cluster``; this driver plays the kernel and actors on the worker
node play an agent's host. Each way of moving one request and its answer is timed ``CALLS`` times,
in ``ROUNDS`` rounds taken in turn (the box's other work hits all alike):

- ``call_async`` / ``call_threaded``: one actor call and its answer (an ``async def`` method, a
  plain one);
- ``push_then_pull``: the bridge before it lingered: a ``push`` sent while a ``pull`` waits, the
  pull answered with it, and the next pull made at once (here after the answer is in hand, so
  that it is not timed: the bridge made it before its push);
- ``push_carries_pull``: the bridge now: one call that delivers the bytes and is answered with
  the next ones (``HostedAgent.push``'s ``poll``);
- ``push_then_stream``: the answer as the next item of a streaming generator (one call for the
  stream, not one per pull).

The p50 of ``push_carries_pull`` is what the bridge cannot go under with Ray; bench_cluster.py
measures the bridge itself. Results go to ``.benchmarks/ray_calls.json``.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import ray
from ray_cluster import loopback_cluster, ms

CALLS = int(os.environ.get("CALLS", "300"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PAYLOAD = b"x" * 100


@ray.remote(num_cpus=0)
class AsyncHost:
    """An async actor with a queue of what the "agent" sent, as a host keeps its agent's bytes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def call(self, data: bytes) -> bytes:
        return data

    async def push(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    async def pull(self) -> bytes:
        return await self.queue.get()

    async def push_and_pull(self, data: bytes) -> bytes:
        self.queue.put_nowait(data)
        return await self.queue.get()

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.queue.get()


@ray.remote(num_cpus=0)
class ThreadedHost:
    def call(self, data: bytes) -> bytes:
        return data


async def timed(round_trip: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        # Bounded: a way that loses its answer must fail the run, not hang it.
        await asyncio.wait_for(round_trip(), 30)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(node: str) -> dict[str, dict[str, float]]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    on_worker = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
    # One actor per way: a pull left waiting by one way must not take another's bytes.
    calls, pulls, carried, streamed = (AsyncHost.options(**on_worker).remote() for _ in range(4))
    threaded = ThreadedHost.options(**on_worker).remote()
    for actor in (calls, pulls, carried, streamed, threaded):
        await actor.call.remote(b"")
    waiting = [pulls.pull.remote()]
    stream = streamed.stream.options(_generator_backpressure_num_objects=2).remote()

    async def push_then_pull() -> None:
        pulls.push.remote(PAYLOAD)
        await waiting.pop()
        waiting.append(pulls.pull.remote())

    async def push_then_stream() -> None:
        streamed.push.remote(PAYLOAD)
        await (await stream.__anext__())

    ways: dict[str, Callable[[], Awaitable[Any]]] = {
        "call_async": lambda: calls.call.remote(PAYLOAD),
        "call_threaded": lambda: threaded.call.remote(PAYLOAD),
        "push_then_pull": push_then_pull,
        "push_carries_pull": lambda: carried.push_and_pull.remote(PAYLOAD),
        "push_then_stream": push_then_stream,
    }
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(ROUNDS):
        for name, way in ways.items():
            samples[name] += await timed(way)
    return {name: ms(s) for name, s in samples.items()}


def main() -> None:
    with loopback_cluster({"num_cpus": 1}, {"num_cpus": 2, "labels": {"pool": "agents"}}) as (cluster, _):
        ray.init(address=cluster.address)
        try:
            worker = next(n["NodeID"] for n in ray.nodes() if n["Labels"].get("pool") == "agents")
            results = asyncio.run(measure(worker))
        finally:
            ray.shutdown()
    for name, figures in results.items():
        print(f"{name:18} p50 {figures['p50_ms']:.3f} ms  p90 {figures['p90_ms']:.3f} ms", flush=True)
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "ray_calls.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
