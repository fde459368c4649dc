"""Spans of a real kernel: read from the SDK's in-memory exporter (attributes checked exactly) and
received over OTLP/HTTP by a receiver decoding the protobuf schema; W3C trace context from a
client, and from a parent agent to its children."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentos import AsyncClient, Client, InvalidArgument
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess
from agentos.testing.script import Reply

from .conftest import PARENT_SPAN, TRACE_ID, TRACED_KERNEL, TRACEPARENT, OtlpReceiver, agent, llm_env


def _without_request_id(attributes: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(attributes["agentos.request_id"], int)
    return {k: v for k, v in attributes.items() if k != "agentos.request_id"}


def _one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [span] = [s for s in spans if s["name"] == name]
    return span


def test_in_memory_spans_of_think_and_errors(tmp_path: Path, fake: FakeGemini) -> None:
    out = tmp_path / "spans.json"
    kernel = KernelProcess(tmp_path / "k", env=llm_env(fake),
                           command=[sys.executable, str(TRACED_KERNEL), str(out)]).start()
    try:
        client = kernel.client()
        client.hello()
        client.trace_with(TRACEPARENT)
        fake.script(Reply(status=503), Reply(function_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}]))
        reply = client.think("weather in Oslo?")
        assert reply.function_calls[0]["name"] == "get_weather"
        # Malformed: refused naming the field, on a msgspec-declared request and on THINK.
        client.trace_with("00-" + "0" * 32 + "-" + PARENT_SPAN + "-01")
        with pytest.raises(InvalidArgument) as refused:
            client.list_agents()
        assert refused.value.details["field"] == "traceparent"
        client.trace_with(lambda: "not a trace context")
        with pytest.raises(InvalidArgument) as refused:
            client.think("hi")
        assert refused.value.details["field"] == "traceparent"
    finally:
        kernel.stop_checked()
    spans = json.loads(out.read_text())

    hello = [s for s in spans if s["name"] == "HELLO"][-1]  # the start-up check's come first
    assert hello["kind"] == "SERVER" and hello["parent_id"] is None and hello["status"] == "UNSET"
    assert _without_request_id(hello["attributes"]) == {
        "agentos.syscall": "HELLO", "agentos.outcome": "ok", "agentos.caller.uid": _uid()}

    think = _one(spans, "chat gemini-test")
    assert think["kind"] == "CLIENT" and think["status"] == "UNSET"
    assert (think["trace_id"], think["parent_id"]) == (TRACE_ID, PARENT_SPAN)
    assert _without_request_id(think["attributes"]) == {
        "agentos.syscall": "THINK", "agentos.outcome": "ok", "agentos.caller.uid": _uid(),
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-test", "gen_ai.response.model": "gemini-test",
        "gen_ai.usage.input_tokens": reply.tokens["prompt"],
        "gen_ai.usage.output_tokens": reply.tokens["output"],
        "gen_ai.response.finish_reasons": ["stop"]}
    [retry] = think["events"]
    assert retry["name"] == "gen_ai.retry"
    assert {k: v for k, v in retry["attributes"].items() if k != "agentos.wait_s"} == {
        "error.type": "unavailable", "agentos.attempt": 1}
    assert retry["attributes"]["agentos.wait_s"] > 0

    tool = _one(spans, "tool_call get_weather")
    assert (tool["trace_id"], tool["parent_id"]) == (TRACE_ID, think["span_id"])
    assert tool["attributes"] == {"gen_ai.tool.name": "get_weather", "gen_ai.tool.type": "function",
                                  "agentos.tool_call.index": 0,
                                  "gen_ai.tool.call.id": reply.function_calls[0]["id"]}

    refused_spans = [s for s in spans if s["attributes"].get("agentos.outcome") == "invalid_argument"]
    assert sorted(s["attributes"]["agentos.syscall"] for s in refused_spans) == ["LIST", "THINK"]
    for span in refused_spans:
        assert span["status"] == "ERROR" and span["parent_id"] is None
        assert span["attributes"]["error.type"] == "invalid_argument"


def _uid() -> int:
    import os
    return os.getuid()


def test_otlp_export_and_trace_context_through_agents(tmp_path: Path, receiver: OtlpReceiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "kernel-under-test"}
    kernel = KernelProcess(tmp_path / "k", env=env).start()
    try:
        with kernel.client(timeout=60) as client:
            assert client.hello()["capabilities"]["telemetry"]["traces"] is True
            client.trace_with(TRACEPARENT)
            parent = client.spawn("parent", agent("parent"), capabilities=["spawn"])
            client.trace_with(None)
            client.wait(id=parent["id"], timeout=60)
            child = _child_of(client, parent["id"])
            client.wait(id=child["id"], timeout=60)
            child_log = client.logs(id=child["id"])
    finally:
        kernel.stop_checked()
    spans = receiver.spans
    assert {s["resource"]["service.name"] for s in spans} == {"kernel-under-test"}
    assert {s["scope"] for s in spans} == {"agentos.kernel"}

    # The client's SPAWN joins the client's trace; the parent agent's syscalls are its children.
    spawns = [s for s in spans if s["name"] == "SPAWN"]
    [outer] = [s for s in spawns if s["parent_id"] == PARENT_SPAN]
    assert outer["trace_id"] == TRACE_ID
    assert outer["attributes"]["agentos.spawned.id"] == parent["id"]
    steps = {s["name"]: s for s in spans if s["parent_id"] == outer["span_id"]}
    assert {"spawn.plan", "spawn.cgroup", "spawn.sandbox", "spawn.register"} <= set(steps)
    # The sandbox's own steps, timed in its child, in order inside spawn.sandbox.
    sandbox = steps["spawn.sandbox"]
    inner = sorted((s for s in spans if s["parent_id"] == sandbox["span_id"]), key=lambda s: s["start"])
    names = [s["name"].removeprefix("spawn.sandbox.") for s in inner]
    assert names[0] == "fork" and names[-1] == "exec", names
    assert {"request", "mounts", "wait for parent", "seccomp"} <= set(names), names
    assert all(s["attributes"] == {"agentos.spawn.step": s["name"].removeprefix("spawn.")} for s in inner)
    assert sandbox["start"] == inner[0]["start"] and inner[-1]["end"] <= sandbox["end"]
    assert all(a["end"] == b["start"] for a, b in zip(inner, inner[1:]))
    [inner_spawn] = [s for s in spawns if s is not outer]
    assert (inner_spawn["trace_id"], inner_spawn["parent_id"]) == (TRACE_ID, outer["span_id"])
    assert inner_spawn["attributes"]["agentos.agent.id"] == parent["id"]
    assert inner_spawn["attributes"]["agentos.agent.name"] == "parent"
    assert inner_spawn["attributes"]["agentos.spawned.id"] == child["id"]

    # The child inherited the trace: TRACEPARENT names the SPAWN that started it, and its own
    # syscalls are that SPAWN's children.
    assert f"TRACEPARENT=00-{TRACE_ID}-{inner_spawn['span_id']}-01" in child_log
    child_calls = [s for s in spans if s["attributes"].get("agentos.agent.id") == child["id"]]
    assert {s["name"] for s in child_calls} >= {"HELLO", "READY"}
    for span in child_calls:
        assert (span["trace_id"], span["parent_id"]) == (TRACE_ID, inner_spawn["span_id"])


def _child_of(client: Client, parent_id: str) -> dict[str, Any]:
    give_up = time.monotonic() + 60
    while True:
        children = [a for a in client.list_agents() if a.get("parent") == parent_id]
        if children:
            return children[0]
        assert time.monotonic() < give_up, "the parent agent never spawned its child"
        time.sleep(0.05)


def test_scheduler_waits_and_a_restart_continues_the_trace(tmp_path: Path, fake: FakeGemini,
                                                          receiver: OtlpReceiver) -> None:
    env = {**llm_env(fake), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_METRICS_EXPORTER": "none"}
    kernel = KernelProcess(tmp_path / "k", env=env).start()
    try:
        async def two_at_once() -> None:
            async with await AsyncClient.connect(kernel.socket_path) as client:
                # One caller's second call queues behind its first (held by the model a while).
                await asyncio.gather(client.think("first"), client.think("second"))
        fake.script(Reply(text="slow", delay=1.0), Reply(text="quick"))
        asyncio.run(two_at_once())

        with kernel.client(timeout=60) as client:
            client.trace_with(TRACEPARENT)
            first = client.spawn("phoenix", agent("child"),
                                 restart={"policy": "always", "max_restarts": 1, "backoff": "10ms"})
            client.trace_with(None)
            runs = _poll_until(lambda: [a for a in client.list_agents() if a["name"] == "phoenix"
                                        and a["status"] not in ("running", "paused")], 2)
    finally:
        kernel.stop_checked()
    spans = receiver.spans

    thinks = [s for s in spans if s["attributes"].get("agentos.syscall") == "THINK"]
    assert len(thinks) == 2
    waits = [e for s in thinks for e in s["events"] if e["name"] == "agentos.scheduler.wait"]
    assert len(waits) == 1 and waits[0]["attributes"]["agentos.wait_s"] >= 0

    [spawn] = [s for s in spans if s["name"] == "SPAWN"]
    assert (spawn["trace_id"], spawn["parent_id"]) == (TRACE_ID, PARENT_SPAN)
    restarted = [a for a in runs if a["id"] != first["id"]]
    assert len(restarted) == 1
    for run in (first, restarted[0]):
        calls = [s for s in spans if s["attributes"].get("agentos.agent.id") == run["id"]]
        assert {s["name"] for s in calls} >= {"HELLO", "READY"}, run
        for span in calls:
            assert (span["trace_id"], span["parent_id"]) == (TRACE_ID, spawn["span_id"])


def _poll_until(found: Any, count: int) -> list[dict[str, Any]]:
    give_up = time.monotonic() + 60
    while True:
        got = found()
        if len(got) >= count:
            return list(got)
        assert time.monotonic() < give_up, got
        time.sleep(0.05)
