"""NOOP round trips against the agentos kernel, the C epoll reference and the uvloop reference.

Two drivers: the C load client (numbers go into the ratio table and into
``extra_info``; the pytest-benchmark time is the client's wall time) and the
Python SDK, ``agentos.Client`` (timed by pytest-benchmark itself). Cases are
ordered case by case, so the servers are measured back to back on each shape.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest
from harness import SdkWorkers, load_server
from noop_cases import (
    CASES,
    LARGE_PAYLOAD,
    PIPELINE_BATCH,
    TARGETS,
    Measurement,
    median_run,
)

from agentos import Client

PAIRS = [(case, target) for case in CASES for target in TARGETS]
SDK_WORKERS = 8
SDK_REQUESTS_PER_WORKER = 300


@pytest.mark.parametrize(("case", "target"), PAIRS, ids=[f"{c}-{t}" for c, t in PAIRS])
def test_c_client(benchmark, servers, references, ratio_table, pytestconfig, case, target):
    server = servers.get(target)
    options = CASES[case].client_options
    duration = pytestconfig.getoption("--noop-duration")
    results = []

    def run() -> None:
        results.append(load_server(references, server, duration=duration, **options))

    benchmark.group = f"noop {case} (C client)"
    benchmark.pedantic(run, rounds=pytestconfig.getoption("--noop-runs"), iterations=1)
    best = median_run(results)
    benchmark.extra_info.update(best)
    benchmark.extra_info["runs_frames_per_s"] = [r["frames_per_s"] for r in results]
    ratio_table.add(Measurement(
        case, "c", target, best["frames_per_s"], best["p50_ns"], best["p99_ns"],
        [r["frames_per_s"] for r in results],
        statistics.median(r["server_cpu_ns_per_frame"] for r in results)))


@pytest.fixture
def sdk_client(servers, target) -> Iterator[Client]:
    with Client(servers.get(target).socket_path) as client:
        yield client


def record_sdk(benchmark, ratio_table, case: str, target: str, frames_per_round: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    stats = benchmark.stats.stats
    fps = frames_per_round / stats.median
    benchmark.extra_info["frames_per_s"] = fps
    per_frame = [t * 1e9 / frames_per_round for t in stats.data]
    ratio_table.add(Measurement(case, "sdk", target, fps, statistics.median(per_frame),
                                _p99(per_frame)))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@pytest.mark.parametrize("target", TARGETS)
def test_sdk_sequential(benchmark, sdk_client, ratio_table, target):
    assert sdk_client.noop(b"ping") == b"ping"
    benchmark.group = "noop sequential (SDK)"
    benchmark(sdk_client.noop, b"")
    record_sdk(benchmark, ratio_table, "sequential", target, 1)


@pytest.mark.parametrize("target", TARGETS)
def test_sdk_large_payload(benchmark, sdk_client, ratio_table, target):
    payload = bytes(range(256)) * (LARGE_PAYLOAD // 256)
    assert sdk_client.noop(payload) == payload
    benchmark.group = "noop 64KiB (SDK)"
    benchmark(sdk_client.noop, payload)
    record_sdk(benchmark, ratio_table, "64KiB", target, 1)


@pytest.mark.parametrize("target", TARGETS)
def test_sdk_pipelined(benchmark, sdk_client, ratio_table, target):
    payloads = [b""] * PIPELINE_BATCH
    assert sdk_client.noop_batch([b"a", b"b"]) == [b"a", b"b"]
    benchmark.group = f"noop pipelined {PIPELINE_BATCH} (SDK noop_batch)"
    benchmark.pedantic(sdk_client.noop_batch, args=(payloads,), rounds=8, warmup_rounds=1)
    record_sdk(benchmark, ratio_table, "pipelined-10k", target, PIPELINE_BATCH)


@pytest.mark.parametrize("target", TARGETS)
def test_sdk_8_clients(benchmark, servers, ratio_table, target):
    workers = SdkWorkers(servers.get(target).socket_path, SDK_WORKERS)
    try:
        benchmark.group = f"noop {SDK_WORKERS} clients (SDK, {SDK_REQUESTS_PER_WORKER} calls each)"
        benchmark.pedantic(workers.run, args=(SDK_REQUESTS_PER_WORKER, 0), rounds=5,
                           warmup_rounds=1)
    finally:
        workers.close()
    record_sdk(benchmark, ratio_table, "8-clients", target, SDK_WORKERS * SDK_REQUESTS_PER_WORKER)
