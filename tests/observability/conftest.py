"""An OTLP/HTTP receiver (what a collector is to the kernel's exporter), kernels wired to a fake
Gemini, and the paths of the test agents."""
from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentos.testing import FakeGemini

AGENTS = Path(__file__).parent / "agents"
TRACED_KERNEL = Path(__file__).parent / "traced_kernel.py"
#: A W3C trace context an agent's own tracing would send (the recommendation's example ids).
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


def agent(name: str) -> str:
    return str(AGENTS / f"{name}.py")


def llm_env(fake: FakeGemini) -> dict[str, str]:
    """A kernel's environment pointing its LLM gateway at ``fake``, as a user would set it."""
    return {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
            "AGENTOS_GEMINI_MODEL": "gemini-test", "AGENTOS_LLM_BACKOFF_BASE": "0.01",
            "GOOGLE_API_KEY": ""}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    assert kind is not None, value
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    """``POST /v1/traces`` and ``/v1/metrics`` on 127.0.0.1, in a thread of its own: each
    request's protobuf body is decoded by opentelemetry-proto's schema (a body that is not one
    fails the request and the test); spans are kept, flattened, in ``spans``, and each metrics
    export as ``{name: {"kind", "resource", "points": [{"attributes", "value" | histogram
    fields}]}}`` in ``exports``."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.exports: list[dict[str, dict[str, Any]]] = []
        self.failures: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        assert not self.failures, self.failures

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _body(self, request: web.Request) -> bytes | None:
        body = await request.read()
        if request.content_type != "application/x-protobuf":
            self.failures.append(f"content type {request.content_type}")
            return None
        return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return web.Response(status=415)
        message = ExportMetricsServiceRequest.FromString(body)
        export: dict[str, dict[str, Any]] = {}
        for resource_metrics in message.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    points = []
                    for point in data.data_points:
                        entry: dict[str, Any] = {"attributes": _attributes(point.attributes),
                                                 "start": point.start_time_unix_nano,
                                                 "time": point.time_unix_nano}
                        if kind == "histogram":
                            entry.update(count=point.count, sum=point.sum, buckets=list(point.bucket_counts),
                                         bounds=list(point.explicit_bounds))
                        else:
                            entry["value"] = getattr(point, point.WhichOneof("value"))
                        points.append(entry)
                    export[metric.name] = {
                        "kind": kind, "resource": resource, "scope": scope_metrics.scope.name, "points": points,
                        "monotonic": data.is_monotonic if kind == "sum" else None,
                        "temporality": getattr(data, "aggregation_temporality", None)}
        self.exports.append(export)
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return web.Response(status=415)
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "kind": Span.SpanKind.Name(span.kind),
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex() or None,
                        "attributes": _attributes(span.attributes),
                        "events": [{"name": e.name, "attributes": _attributes(e.attributes)}
                                   for e in span.events],
                        "status": span.status.code, "resource": resource,
                        "scope": scope_spans.scope.name,
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def wait_for(self, count: int, what: Any = lambda span: True, timeout: float = 30) -> list[dict[str, Any]]:
        """The spans ``what`` accepts, once there are ``count`` of them."""
        give_up = time.monotonic() + timeout
        while True:
            found = [s for s in list(self.spans) if what(s)]
            if len(found) >= count or time.monotonic() > give_up:
                return found
            time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini().running_in_thread() as f:
        yield f

