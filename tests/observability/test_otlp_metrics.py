"""Metrics over OTLP/HTTP from a real kernel, received and decoded with opentelemetry-proto's
metrics schema: the same values the Prometheus registry holds, matching what was done, and the
OTEL_* variables that turn the export on, pace it or refuse it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentos.observability.metrics import THINK_BUCKETS
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

from .conftest import OtlpReceiver, agent, llm_env


def _point(export: dict[str, Any], name: str, **attributes: str) -> dict[str, Any]:
    points = export.get(name, {}).get("points", [])
    for point in points:
        if point["attributes"] == attributes:
            return point
    raise AssertionError(f"no {name} point with attributes {attributes}: {points}")


def test_exported_values_match_what_was_done(tmp_path: Path, fake: FakeGemini, receiver: OtlpReceiver) -> None:
    env = {**llm_env(fake), "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{receiver.url}/v1/metrics",
           "OTEL_METRIC_EXPORT_INTERVAL": "100", "OTEL_SERVICE_NAME": "metered-kernel"}
    kernel = KernelProcess(tmp_path / "k", env=env).start()
    try:
        with kernel.client(timeout=60) as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            assert telemetry["otlp_metrics"] is True
            # Metrics alone: no Prometheus endpoint, and the traces' variables are not set.
            assert telemetry["traces"] is False and telemetry["metrics"] is None
            for n in range(3):
                client.wait(id=client.spawn(f"quick-{n}", command=["true"])["id"], timeout=60)
            denied = client.spawn("denied", agent("denied"))
            client.wait(id=denied["id"], timeout=60)
            answers = [client.think(f"question {n}") for n in range(2)]
            # The periodic export runs while the kernel does: one arrives with the THINKs in it.
            periodic = _wait_for_export(receiver, "agentos_think_calls_total")
    finally:
        kernel.stop_checked()
    assert periodic["agentos_think_calls_total"]["resource"]["service.name"] == "metered-kernel"

    last = receiver.exports[-1]  # the one sent as the kernel stopped: every call is in it
    who = f"uid:{os.getuid()}"
    assert _point(last, "agentos_syscalls_total", op="SPAWN", outcome="ok")["value"] == 4
    assert _point(last, "agentos_syscalls_total", op="SPAWN", outcome="permission_denied")["value"] == 1
    assert _point(last, "agentos_denials_total", capability="spawn", op="SPAWN")["value"] == 1
    assert _point(last, "agentos_agents", status="exited")["value"] == 4
    assert _point(last, "agentos_think_calls_total", model="gemini-test", agent=who, outcome="ok")["value"] == 2
    tokens = _point(last, "agentos_think_tokens_total", model="gemini-test", agent=who, type="input")
    assert tokens["value"] == sum(a.tokens["prompt"] for a in answers)

    calls = last["agentos_syscalls_total"]
    assert calls["kind"] == "sum" and calls["monotonic"] is True
    assert calls["temporality"] == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
    assert last["agentos_agents"]["kind"] == "gauge"
    think = _point(last, "agentos_think_duration_seconds", model="gemini-test", agent=who)
    assert last["agentos_think_duration_seconds"]["kind"] == "histogram"
    assert think["count"] == 2 and think["sum"] > 0
    assert think["bounds"] == list(THINK_BUCKETS)
    assert len(think["buckets"]) == len(THINK_BUCKETS) + 1 and sum(think["buckets"]) == 2
    spawn = _point(last, "agentos_spawn_duration_seconds")
    assert spawn["count"] == 4 and sum(spawn["buckets"]) == 4
    assert _point(last, "process_resident_memory_bytes")["value"] > 0
    # Cumulative: every sum and histogram counts from the same start, the same in each export.
    starts = {p["start"] for export in (periodic, last) for metric in export.values()
              if metric["kind"] != "gauge" for p in metric["points"]}
    assert len(starts) == 1 and starts != {0}


def _wait_for_export(receiver: OtlpReceiver, name: str) -> dict[str, Any]:
    import time

    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        for export in list(receiver.exports):
            if name in export:
                return export
        time.sleep(0.05)
    raise AssertionError(f"no export with {name} in 30 s: {len(receiver.exports)} exports")


@pytest.mark.parametrize(("variable", "value"), [("OTEL_METRICS_EXPORTER", "prometheus"),
                                                  ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
                                                  ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
                                                  ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
def test_a_bad_variable_is_refused_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics", variable: value}
    result = subprocess.run([sys.executable, "-m", "agentos", "kernel", "--socket", str(tmp_path / "s"),
                             "--state-dir", str(tmp_path / "state")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and variable in result.stderr, result.stderr


def test_none_turns_it_off(tmp_path: Path, receiver: OtlpReceiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_METRICS_EXPORTER": "none",
           "OTEL_TRACES_EXPORTER": "none"}
    kernel = KernelProcess(tmp_path / "k", env=env).start()
    try:
        with kernel.client() as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
    finally:
        kernel.stop_checked()
    assert telemetry["otlp_metrics"] is False and telemetry["traces"] is False
    assert receiver.exports == [] and receiver.spans == []
