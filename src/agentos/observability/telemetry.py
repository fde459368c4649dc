"""The ``telemetry`` kernel service: what is on (traces, the Prometheus endpoint), and the one
syscall observer that feeds both.

Traces are on when the kernel configuration says so (``telemetry.traces``, ``agentos kernel
--otel``) or, when it says nothing, when the kernel's environment names an exporter the standard
way (``OTEL_TRACES_EXPORTER`` other than ``none``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` turns that off). The
Prometheus endpoint is on when ``telemetry.metrics`` (``--metrics HOST:PORT``) names an address;
metrics are exported over OTLP when the environment asks the standard way
(``OTEL_METRICS_EXPORTER`` other than ``none``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``).

Asked for explicitly, a missing ``agentos[otel]`` extra stops the kernel at start; implied by
``OTEL_*`` variables meant for other programs, it is logged and traces stay off. With both off,
this service adds no guard and no observer: the kernel runs exactly as without it.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..processes.agent import qualified
from ..protocol import Op
from ..protocol.lifecycle import ENDED_TOPICS, Topic
from .notes import NOTES, Notes, current

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..kernel.identity import Identity
    from ..kernel.syscalls import Call, Handler
    from ..llm.service import LLMService
    from ..messaging.service import MessagingService
    from ..processes.table import AgentTable
    from .metrics import KernelMetrics
    from .otel import Tracing
    from .otlp_metrics import OtlpMetrics
    from .prometheus import MetricsServer

log = logging.getLogger("agentos.telemetry")

SECTION_KEYS = ("traces", "metrics", "metrics_remote", "series_grace")
#: The environment variables that ask for traces, or metrics over OTLP, when the configuration
#: does not say.
_TRACES_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_METRICS_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
#: The syscalls that note what happens inside them (``notes``).
_NOTED = frozenset({int(Op.SPAWN), int(Op.THINK)})
_INSTALL = "pip install 'agentos[otel]'"
#: The Prometheus scrape token's file in the state dir.
METRICS_TOKEN = "metrics.token"


@dataclass(frozen=True)
class TelemetrySettings:
    """The ``telemetry`` section of the kernel configuration, with the environment's say."""

    traces: bool = False
    #: Whether ``traces`` was asked for (configuration, ``--otel``) rather than implied by OTEL_*.
    traces_asked: bool = False
    #: ``HOST:PORT`` of the Prometheus endpoint (port 0: any free one, HELLO tells which).
    metrics: str | None = None
    #: Serve metrics on an address other than loopback (they name agents, projects and models).
    metrics_remote: bool = False
    #: Export metrics over OTLP (the environment asks for it).
    otlp_metrics: bool = False
    #: Seconds an ended agent's series stay (``None``: ``metrics.SERIES_GRACE``).
    series_grace: float | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any], environ: Mapping[str, str]) -> TelemetrySettings:
        unknown = sorted(set(section) - set(SECTION_KEYS))
        if unknown:
            raise ValueError(f"telemetry: unknown setting {', '.join(map(repr, unknown))} "
                             f"(expected {', '.join(SECTION_KEYS)})")
        for key in ("traces", "metrics_remote"):
            if key in section and not isinstance(section[key], bool):
                raise ValueError(f"telemetry.{key}: expected true or false, got {section[key]!r}")
        metrics = section.get("metrics")
        if metrics is not None:
            from .prometheus import parse_address

            parse_address(metrics, bool(section.get("metrics_remote", False)))
        grace = section.get("series_grace")
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0):
            raise ValueError(f"telemetry.series_grace: expected seconds (0 or more), got {grace!r}")
        traces = section.get("traces")
        return cls(traces=traces if traces is not None else traces_from_environment(environ),
                   traces_asked=bool(traces), metrics=metrics,
                   metrics_remote=bool(section.get("metrics_remote", False)),
                   otlp_metrics=metrics_from_environment(environ),
                   series_grace=float(grace) if grace is not None else None)


def traces_from_environment(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask this process for traces."""
    return _asked(environ, "OTEL_TRACES_EXPORTER", _TRACES_VARIABLES)


def metrics_from_environment(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask this process for metrics over OTLP."""
    return _asked(environ, "OTEL_METRICS_EXPORTER", _METRICS_VARIABLES)


def _asked(environ: Mapping[str, str], exporter_variable: str, endpoints: tuple[str, ...]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get(exporter_variable, "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(environ.get(name) for name in endpoints)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a syscall, as spans and metrics name them."""

    uid: int
    agent_id: str | None = None
    name: str | None = None
    project: str | None = None

    @property
    def label(self) -> str:
        """The ``agent`` label of metrics: ``project/name``, ``name``, else ``uid:N`` (outside clients)."""
        if self.name is None:
            return f"uid:{self.uid}" if self.agent_id is None else f"id:{self.agent_id}"
        return qualified(self.project, self.name)


class TelemetryService:
    """Spans (``otel.Tracing``) and metrics (``metrics.KernelMetrics``) of every syscall."""

    name = "telemetry"

    def __init__(self, kernel: Kernel, agents: AgentTable, llm: LLMService, messaging: MessagingService) -> None:
        self.kernel = kernel
        #: Who a caller is (its agent's name and project), what the kernel's state is when sampled.
        self.agents = agents
        self.llm = llm
        self.messaging = messaging
        self.settings = TelemetrySettings.from_section(kernel.config.section("telemetry"), os.environ)
        self.tracing: Tracing | None = None
        self.metrics: KernelMetrics | None = None
        self.otlp_metrics: OtlpMetrics | None = None
        self._server: MetricsServer | None = None
        self._unsubscribe: list[Any] = []
        if self.settings.traces:
            self.tracing = self._load_tracing()
        if self.settings.metrics is not None or self.settings.otlp_metrics:
            self.metrics = self._load_metrics()
        if self.metrics is not None and self.settings.otlp_metrics:
            from .otlp_metrics import OtlpMetrics

            self.otlp_metrics = OtlpMetrics(self.metrics, os.environ)

    def _load_tracing(self) -> Tracing | None:
        try:
            from .otel import Tracing
        except ImportError as exc:
            if self.settings.traces_asked:
                raise RuntimeError(f"telemetry.traces needs OpenTelemetry ({exc}): {_INSTALL}") from None
            log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed (%s); "
                        "traces are off (%s)", exc, _INSTALL)
            return None
        return Tracing(os.environ)

    def _load_metrics(self) -> KernelMetrics | None:
        try:
            from .metrics import KernelMetrics
            if self.settings.otlp_metrics:
                from . import otlp_metrics  # noqa: F401 - OpenTelemetry's SDK, checked now
        except ImportError as exc:
            if self.settings.metrics is not None:
                raise RuntimeError(f"telemetry.metrics needs prometheus_client ({exc}): {_INSTALL}") from None
            log.warning("OTEL_* variables ask for metrics, but OpenTelemetry or prometheus_client is not "
                        "installed (%s); metrics are off (%s)", exc, _INSTALL)
            return None
        if self.settings.series_grace is None:
            return KernelMetrics(self.kernel, self.agents, self.llm, self.messaging)
        return KernelMetrics(self.kernel, self.agents, self.llm, self.messaging, self.settings.series_grace)

    def syscalls(self) -> Mapping[Op, Handler]:
        return {}

    async def start(self) -> None:
        if self.tracing is not None or self.metrics is not None:
            # Notes for the syscalls that make them; a span and metrics for every one.
            self.kernel.add_guard(self._guard, ops=_NOTED)
            self.kernel.add_observer(self._observe)
            self._unsubscribe += [self.kernel.events.subscribe(topic, self._on_ended)
                                  for topic in ENDED_TOPICS]
        if self.tracing is not None:
            self._unsubscribe.append(self.kernel.events.subscribe(Topic.STARTED, self._on_started))
            log.info("telemetry: traces on, exported to %s", self.tracing.describe())
        if self.metrics is not None:
            self.metrics.start()
        if self.metrics is not None and self.settings.metrics is not None:
            from .prometheus import MetricsServer

            self._server = MetricsServer(self.metrics, self.settings.metrics, self.settings.metrics_remote,
                                         self.kernel.config.state_dir / METRICS_TOKEN)
            await self._server.start()
            log.info("telemetry: Prometheus metrics at %s", self._server.url)
        if self.otlp_metrics is not None:
            self.otlp_metrics.start()
            log.info("telemetry: metrics exported to %s", self.otlp_metrics.describe())

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._server is not None:
            await self._server.stop()
        if self.otlp_metrics is not None:
            await self.otlp_metrics.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.tracing is not None:
            # Exports what is left (a blocking HTTP request): on a worker thread.
            await self.kernel.loop.run_in_executor(None, self.tracing.shutdown)

    def capabilities(self) -> Mapping[str, Any]:
        return {"traces": self.tracing is not None,
                "metrics": self._server.url if self._server is not None else None,
                "otlp_metrics": self.otlp_metrics is not None,
                "metrics_token_file": str(self._server.token_file) if self._server is not None else None}

    # -- the hooks ------------------------------------------------------------------------

    def _guard(self, call: Call) -> None:
        """Runs in the task serving ``call``, before its handler: gives SPAWN and THINK their notes."""
        notes = Notes(call)
        NOTES.set(notes)
        if call.op == Op.SPAWN and self.tracing is not None:
            self.tracing.begin_spawn(call, notes, self.caller(call.identity))

    def _observe(self, call: Call, outcome: str, latency_s: float) -> None:
        # Called in a copy of the call's context: the notes its task made are visible.
        notes = current()
        if notes is not None and notes.call is call:
            notes.live = False
        else:
            notes = None
        caller = self.caller(call.identity)
        if self.tracing is not None:
            self.tracing.syscall(call, outcome, latency_s, time.time_ns(), notes, caller,
                                 self.llm.config.provider if call.op == Op.THINK else None)
        if self.metrics is not None:
            self.metrics.syscall(call, outcome, latency_s, notes, caller)

    def _on_started(self, topic: str, event: dict[str, Any]) -> None:
        # Published inside SPAWN's task: its notes learn which agent it started. Without notes,
        # a restart (the supervisor's, or a restore at start) started it.
        notes = current()
        if notes is not None:
            notes.spawned = event
        if self.tracing is not None:
            self.tracing.agent_started(str(event["id"]), qualified(event.get("project"), str(event["name"])), notes)

    def _on_ended(self, topic: str, event: dict[str, Any]) -> None:
        if "id" not in event or "name" not in event:
            return
        name = qualified(event.get("project"), str(event["name"]))
        if self.tracing is not None:
            self.tracing.agent_ended(str(event["id"]), name)
        if self.metrics is not None:
            self.metrics.agent_ended(name)

    def caller(self, identity: Identity) -> Caller:
        return caller_of(self.agents, identity.uid, identity.agent_id)


def caller_of(agents: AgentTable, uid: int, agent_id: str | None) -> Caller:
    """The caller ``uid`` (an outside client), or the agent ``agent_id`` by its name and project."""
    if agent_id is None:
        return Caller(uid)
    agent = agents.get(agent_id)
    if agent is None:
        return Caller(uid, agent_id)
    return Caller(uid, agent_id, agent.name, agent.project)
