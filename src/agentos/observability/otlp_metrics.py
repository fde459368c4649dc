"""The kernel's metrics over OTLP/HTTP: the Prometheus registry, read every export interval.

The counters are counted once, in ``metrics.KernelMetrics``' registry; this exporter reads that
registry as a scrape does (the kernel's state sampled first) and sends what it holds as OTLP
cumulative sums, gauges and explicit-bucket histograms. So turning OTLP on adds no work per
syscall: no second set of instruments, no OpenTelemetry aggregation on the way of a THINK.

Configured by the standard variables: ``OTEL_METRICS_EXPORTER`` (``otlp``, the default,
``console`` or ``none``; comma-separated for several), ``OTEL_METRIC_EXPORT_INTERVAL`` and
``OTEL_METRIC_EXPORT_TIMEOUT`` (milliseconds), ``OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT``,
``..._HEADERS``, ``..._COMPRESSION``, ``..._TIMEOUT``, and the resource's ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as Family

from .. import __version__
from .otel import check_protocol, kernel_resource

if TYPE_CHECKING:
    from .metrics import KernelMetrics

log = logging.getLogger("agentos.telemetry")

#: The SDK's defaults for the standard variables, milliseconds.
DEFAULT_INTERVAL_MS = 60_000
DEFAULT_TIMEOUT_MS = 30_000
_SCOPE = InstrumentationScope("agentos.kernel", __version__)
_CUMULATIVE = AggregationTemporality.CUMULATIVE


def exporters(environ: Mapping[str, str]) -> list[MetricExporter]:
    """The exporters ``OTEL_METRICS_EXPORTER`` names; ValueError naming the variable otherwise."""
    chosen: list[MetricExporter] = []
    for name in filter(None, (n.strip() for n in environ.get("OTEL_METRICS_EXPORTER", "otlp").lower().split(","))):
        if name == "otlp":
            check_protocol(environ, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            chosen.append(OTLPMetricExporter())  # reads OTEL_EXPORTER_OTLP_* itself
        elif name == "console":
            chosen.append(ConsoleMetricExporter())
        elif name != "none":
            raise ValueError(f"OTEL_METRICS_EXPORTER: unknown exporter {name!r} (expected otlp, console "
                             "or none; Prometheus is served by telemetry.metrics, --metrics)")
    return chosen


def _milliseconds(environ: Mapping[str, str], variable: str, default: int) -> float:
    text = environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{variable}: expected milliseconds (more than 0), got {text!r}")
    return value


class OtlpMetrics:
    """Sends ``metrics``' registry to each exporter every ``OTEL_METRIC_EXPORT_INTERVAL``, and
    once more when stopped (the last values of a kernel that ends)."""

    def __init__(self, metrics: KernelMetrics, environ: Mapping[str, str]) -> None:
        self.metrics = metrics
        self.interval_s = _milliseconds(environ, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS) / 1e3
        self.timeout_ms = _milliseconds(environ, "OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_TIMEOUT_MS)
        self.exporters = exporters(environ)
        self.resource = kernel_resource()
        #: Every series counts from here (OTLP's start time of cumulative points).
        self.start_ns = time.time_ns()
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        where = ", ".join(f"OTLP/HTTP {e._endpoint}" if isinstance(e, OTLPMetricExporter) else type(e).__name__
                          for e in self.exporters)
        return f"{where or 'nowhere (OTEL_METRICS_EXPORTER=none)'} every {self.interval_s:g}s"

    def start(self) -> None:
        if self.exporters:
            self._task = self.metrics.kernel.loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.export()
        loop = self.metrics.kernel.loop
        for exporter in self.exporters:
            await loop.run_in_executor(None, exporter.shutdown)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.export()

    async def export(self) -> None:
        """Sample, convert on the loop (a read of the registry), send on a worker thread (a
        blocking HTTP request)."""
        await self.metrics.sample()
        data = self.convert(self.metrics.registry.collect(), time.time_ns())
        loop = self.metrics.kernel.loop
        for exporter in self.exporters:
            try:
                await loop.run_in_executor(None, self._send, exporter, data)
            except Exception:  # noqa: BLE001 - a collector that is down must not stop the kernel
                log.exception("telemetry: exporting metrics failed")

    def _send(self, exporter: MetricExporter, data: MetricsData) -> None:
        result = exporter.export(data, timeout_millis=self.timeout_ms)
        if result.name != "SUCCESS":
            log.warning("telemetry: exporting metrics failed (%s)", result.name)

    def convert(self, families: Iterable[Family], now_ns: int) -> MetricsData:
        """Prometheus families as OTLP metrics, named as Prometheus names them."""
        metrics = [metric for family in families for metric in self._metric(family, now_ns)]
        scope = ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")
        return MetricsData(resource_metrics=[ResourceMetrics(resource=self.resource, scope_metrics=[scope],
                                                             schema_url="")])

    def _metric(self, family: Family, now_ns: int) -> Iterator[Metric]:
        start = self.start_ns
        if family.type == "histogram":
            histogram = list(_histogram_points(family, start, now_ns))
            if histogram:
                yield Metric(name=family.name, description=family.documentation, unit=family.unit,
                             data=Histogram(data_points=histogram, aggregation_temporality=_CUMULATIVE))
            return
        data: Any
        if family.type == "counter":
            name = family.name + "_total"
            points = [NumberDataPoint(dict(s.labels), start, now_ns, s.value)
                      for s in family.samples if s.name == name]
            data = Sum(data_points=points, aggregation_temporality=_CUMULATIVE, is_monotonic=True)
        else:
            name = family.name
            points = [NumberDataPoint(dict(s.labels), start, now_ns, s.value)
                      for s in family.samples if s.name == name]
            data = Gauge(data_points=points)
        if points:
            yield Metric(name=name, description=family.documentation, unit=family.unit, data=data)


def _histogram_points(family: Family, start_ns: int, now_ns: int) -> Iterator[HistogramDataPoint]:
    """Prometheus' cumulative ``_bucket{le}``, ``_count`` and ``_sum`` samples as OTLP points
    (bucket counts per bucket, the bounds without +Inf; min and max are not known)."""
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": [], "count": 0, "sum": 0.0})
        suffix = sample.name[len(family.name):]
        if suffix == "_bucket":
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif suffix == "_count":
            entry["count"] = int(sample.value)
        elif suffix == "_sum":
            entry["sum"] = sample.value
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        counts, before = [], 0.0
        for _, cumulative in buckets:
            counts.append(int(cumulative - before))
            before = cumulative
        yield HistogramDataPoint(attributes=dict(key), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                                 count=entry["count"], sum=entry["sum"], bucket_counts=counts,
                                 explicit_bounds=[le for le, _ in buckets if math.isfinite(le)],
                                 min=None, max=None)  # type: ignore[arg-type]
