"""Spans of syscalls, with OpenTelemetry's SDK and its OTLP/HTTP exporter.

One span per syscall (NOOP excepted: the reactor answers it in C), made by the kernel's
observer after the reply has gone out, from the call's start and latency: tracing adds no
work before a reply. SPAWN's span is the exception: it starts before the agent does, because
the agent inherits its context (``TRACEPARENT`` in its environment, and its syscalls' spans
are its children unless they send a ``traceparent`` of their own).

Exporters come from the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, the default,
``console`` or ``none``; a comma-separated list for several), ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``. A program that embeds
the kernel and has set up its own SDK ``TracerProvider`` keeps it: the kernel's spans go there.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from ..protocol import Op, op_name
from .notes import Notes

if TYPE_CHECKING:
    from ..kernel.syscalls import Call
    from .telemetry import Caller

#: ``service.name`` when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
SERVICE = "agentos-kernel"
#: ``gen_ai.provider.name`` of each ``llm.provider`` (GenAI semantic conventions' values).
GEN_AI_PROVIDERS = {"gemini": "gcp.gemini", "openai": "openai"}
#: The trailing step of a SPAWN that started its agent: the table, ledger, permissions, its connection.
REGISTER_STEP = "register"
_PROTOCOL = "http/protobuf"
#: How many ended agents' trace contexts are kept for a restart to continue (a bound, not a
#: time: nothing grows with the agents a kernel has run).
ENDED_KEPT = 1024
_ROOT = Context()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
#: The statuses of the usual outcomes, made once.
_ERROR_STATUS = {code: Status(StatusCode.ERROR, code) for code in (
    "permission_denied", "invalid_argument", "not_found", "cancelled", "timeout", "unavailable",
    "rate_limited", "budget_exhausted")}
_propagator = TraceContextTextMapPropagator()


def exporters(environ: Mapping[str, str]) -> Iterator[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names; ValueError naming the variable otherwise."""
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    for name in filter(None, names):
        if name == "otlp":
            check_protocol(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            yield OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        elif name == "console":
            yield ConsoleSpanExporter()
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} "
                             "(expected otlp, console or none)")


def check_protocol(environ: Mapping[str, str], signal_variable: str) -> None:
    """ValueError naming the variable that asks for an OTLP protocol other than ours."""
    for variable in (signal_variable, "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "").strip()
        if protocol and protocol != _PROTOCOL:
            raise ValueError(f"{variable}: the kernel exports OTLP over HTTP ({_PROTOCOL}), not {protocol!r}")


def kernel_resource() -> Resource:
    """The kernel's resource: OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else ``agentos-kernel``."""
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
    return resource


def traceparent_of(span: Span) -> str:
    """``span``'s context as a W3C ``traceparent`` header."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(span))
    return carrier["traceparent"]


class Tracing:
    """Makes the spans; ``describe()`` says where they go."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        current = trace.get_tracer_provider()
        self._owned = not isinstance(current, TracerProvider)
        #: Our own provider's processors, which finished spans are handed to directly.
        self._processors: list[SpanProcessor] | None = None
        if isinstance(current, TracerProvider):
            self.provider = current
            self._where = "the TracerProvider of the program running the kernel"
        else:
            self.provider = TracerProvider(resource=kernel_resource())
            chosen = list(exporters(environ))
            self._processors = [BatchSpanProcessor(exporter) for exporter in chosen]
            for processor in self._processors:
                self.provider.add_span_processor(processor)
            self._where = ", ".join(_describe(e) for e in chosen) or "nowhere (OTEL_TRACES_EXPORTER=none)"
        self.tracer = self.provider.get_tracer("agentos.kernel", __version__)
        self._scope = InstrumentationScope("agentos.kernel", __version__)
        #: Each running agent's default parent: the span of the SPAWN that started it.
        self._agents: dict[str, Context] = {}
        #: Those of agents that ended lately, by qualified name, oldest first (``ENDED_KEPT`` at most).
        self._ended: dict[str, Context] = {}

    def describe(self) -> str:
        return self._where

    def shutdown(self) -> None:
        if self._owned:
            self.provider.shutdown()
        else:
            self.provider.force_flush()

    # -- agents' contexts -------------------------------------------------------------------

    def agent_started(self, agent_id: str, qualified_name: str, notes: Notes | None) -> None:
        """``notes``: of the SPAWN that started it; None for a restart by its supervisor, which
        continues the trace its previous run was in."""
        if notes is not None and notes.span is not None:
            self._agents[agent_id] = trace.set_span_in_context(
                NonRecordingSpan(notes.span.get_span_context()))
        elif notes is None:
            context = self._ended.pop(qualified_name, None)
            if context is not None:
                self._agents[agent_id] = context

    def agent_ended(self, agent_id: str, qualified_name: str) -> None:
        context = self._agents.pop(agent_id, None)
        if context is not None:
            # Kept a while, by name, for a restart (the supervisor's, after its backoff) to continue.
            self._ended.pop(qualified_name, None)
            self._ended[qualified_name] = context
            if len(self._ended) > ENDED_KEPT:
                del self._ended[next(iter(self._ended))]

    def _parent(self, call: Call, notes: Notes | None, caller: Caller) -> Context:
        """The caller's ``traceparent``, else (an agent) the SPAWN that started it, else none."""
        value = notes.traceparent if notes is not None and notes.traceparent else getattr(
            call.request, "traceparent", None)
        if isinstance(value, str):  # an absent field is msgspec's UNSET
            context = _propagator.extract({"traceparent": value})
            if trace.get_current_span(context).get_span_context().is_valid:
                return context
        if caller.agent_id is not None:
            return self._agents.get(caller.agent_id, _ROOT)
        return _ROOT

    # -- spans ------------------------------------------------------------------------------

    def begin_spawn(self, call: Call, notes: Notes, caller: Caller) -> None:
        """Start SPAWN's span now: the agent it starts is given its context."""
        notes.span = self.tracer.start_span("SPAWN", context=self._parent(call, notes, caller),
                                            kind=SpanKind.SERVER, start_time=notes.mark_ns)
        notes.child_traceparent = traceparent_of(notes.span)

    def syscall(self, call: Call, outcome: str, latency_s: float, end_ns: int,
                notes: Notes | None, caller: Caller, llm_provider: str | None = None) -> None:
        """The span of one finished syscall (and its children: SPAWN's steps, THINK's tool
        calls); ``llm_provider`` is the kernel's ``llm.provider`` (THINK's spans name it)."""
        attributes = _attributes(call, outcome, caller)
        kind = SpanKind.SERVER
        name = op_name(call.op)
        events: Sequence[tuple[str, int, Mapping[str, Any]]] = ()
        completion = notes.answer if notes is not None else None
        if notes is not None:
            events = notes.events
            if call.op == Op.THINK:
                _gen_ai(attributes, notes, llm_provider)
                kind = SpanKind.CLIENT  # GenAI: the kernel is the model's client
                model = attributes.get("gen_ai.request.model")
                name = f"chat {model}" if model else "chat"
            if notes.spawned is not None:
                attributes["agentos.spawned.id"] = str(notes.spawned["id"])
                attributes["agentos.spawned.name"] = str(notes.spawned["name"])
                attributes["agentos.spawned.pid"] = int(notes.spawned["pid"])
            if completion is not None and completion.fallbacks:
                events = [*events, *(("gen_ai.fallback", end_ns, {"gen_ai.request.model": f["model"],
                                                                   "error.type": f["error"]["type"]})
                                     for f in completion.fallbacks)]
        error = attributes.get("error.type")
        status = _ERROR_STATUS.get(error) or Status(StatusCode.ERROR, str(error)) if error else _UNSET
        if notes is not None and notes.span is not None:
            span = notes.span  # SPAWN's, started before its agent was
            span.set_attributes(attributes)
            for event, time_ns, event_attributes in events:
                span.add_event(event, event_attributes, timestamp=time_ns)
            span.set_status(status)
            span.end(end_time=end_ns)
            context: SpanContext | None = span.get_span_context()
        else:
            context = self._record(name, kind, self._parent(call, notes, caller), attributes,
                                   end_ns - int(latency_s * 1e9), end_ns, status, events)
        if notes is not None and context is not None and context.trace_flags.sampled:
            self._children(context, call, outcome, notes, end_ns)

    def _record(self, name: str, kind: SpanKind, parent: Context, attributes: Mapping[str, Any],
                start_ns: int, end_ns: int, status: Status = _UNSET,
                events: Sequence[tuple[str, int, Mapping[str, Any]]] = ()) -> SpanContext | None:
        """A span already over: handed to the span processors as the finished span it is.

        The SDK's live spans (locks, attribute validation, on_start) cost about ten times this
        per THINK, for a span whose start, end and attributes are all known when it is made. A
        TracerProvider of the program embedding the kernel gets its spans through its tracer."""
        if self._processors is None:
            span = self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes,
                                          start_time=start_ns)
            for event, time_ns, event_attributes in events:
                span.add_event(event, event_attributes, timestamp=time_ns)
            span.set_status(status)
            span.end(end_time=end_ns)
            return span.get_span_context()
        parent_context = trace.get_current_span(parent).get_span_context()
        provider = self.provider
        trace_id = parent_context.trace_id if parent_context.is_valid else provider.id_generator.generate_trace_id()
        sampled = provider.sampler.should_sample(parent, trace_id, name, kind, attributes)
        if not sampled.decision.is_sampled():
            return None
        if sampled.attributes:
            attributes = {**attributes, **sampled.attributes}
        context = SpanContext(trace_id, provider.id_generator.generate_span_id(), False, _SAMPLED,
                              sampled.trace_state)
        finished = ReadableSpan(name, context, parent_context if parent_context.is_valid else None,
                            provider.resource, attributes,
                            tuple(Event(event, event_attributes, time_ns)
                                  for event, time_ns, event_attributes in events),
                            (), kind, status=status, start_time=start_ns, end_time=end_ns,
                            instrumentation_scope=self._scope)
        for processor in self._processors:
            processor.on_end(finished)
        return context

    def _children(self, context: SpanContext, call: Call, outcome: str, notes: Notes, end_ns: int) -> None:
        steps = list(notes.steps)
        if call.op == Op.SPAWN and outcome == "ok":
            steps.append((REGISTER_STEP, notes.mark_ns, end_ns))
        completion = notes.answer
        if not steps and (completion is None or not completion.function_calls):
            return  # most THINKs: no context to make
        parent = trace.set_span_in_context(NonRecordingSpan(context))
        for step, start_ns, step_end_ns in steps:
            step_context = self._record(f"spawn.{step}", SpanKind.INTERNAL, parent, {"agentos.spawn.step": step},
                                        start_ns, step_end_ns)
            inner = notes.inner.get(step) if notes.inner else None
            if inner and step_context is not None:
                self._inner_steps(step, inner, step_context)
        if completion is None:
            return
        # The model asked for these; the agent runs them (its own spans, joined by traceparent).
        for index, function_call in enumerate(completion.function_calls):
            tool = str(function_call.get("name", ""))
            tool_attributes: dict[str, Any] = {"gen_ai.tool.name": tool, "gen_ai.tool.type": "function",
                                               "agentos.tool_call.index": index}
            if function_call.get("id"):
                tool_attributes["gen_ai.tool.call.id"] = str(function_call["id"])
            self._record(f"tool_call {tool}", SpanKind.INTERNAL, parent, tool_attributes, end_ns, end_ns)

    def _inner_steps(self, step: str, inner: Sequence[tuple[str, int, int]], context: SpanContext) -> None:
        """The steps a SPAWN step reported of its own (the sandbox's, timed in its child)."""
        parent = trace.set_span_in_context(NonRecordingSpan(context))
        for name, start_ns, end_ns in inner:
            self._record(f"spawn.{step}.{name}", SpanKind.INTERNAL, parent, {"agentos.spawn.step": f"{step}.{name}"},
                         start_ns, end_ns)


def _gen_ai(attributes: dict[str, Any], notes: Notes, provider: str | None) -> None:
    """THINK's attributes by the GenAI semantic conventions (docs/observability.md), added to
    ``attributes``."""
    attributes["gen_ai.operation.name"] = "chat"
    if provider is not None:
        attributes["gen_ai.provider.name"] = GEN_AI_PROVIDERS.get(provider, provider)
    completion = notes.answer
    if completion is not None:
        usage = completion.usage
        requested = completion.fallbacks[0]["model"] if completion.fallbacks else completion.model
        reasons = [c.finish_reason for c in completion.candidates] or [completion.finish_reason]
        attributes.update({
            "gen_ai.request.model": requested, "gen_ai.response.model": completion.model,
            "gen_ai.usage.input_tokens": usage.prompt, "gen_ai.usage.output_tokens": usage.output,
            "gen_ai.response.finish_reasons": reasons})
        if usage.cost_usd is not None:
            attributes["agentos.llm.cost_usd"] = usage.cost_usd
    elif notes.error is not None:
        attributes["error.type"] = notes.error.kind.value
        if notes.model:
            attributes["gen_ai.request.model"] = notes.model


def _attributes(call: Call, outcome: str, caller: Caller) -> dict[str, Any]:
    attributes: dict[str, Any] = {"agentos.syscall": op_name(call.op), "agentos.outcome": outcome,
                                  "agentos.request_id": call.request_id, "agentos.caller.uid": caller.uid}
    if caller.agent_id is not None:
        attributes["agentos.agent.id"] = caller.agent_id
    if caller.name is not None:
        attributes["agentos.agent.name"] = caller.name
    if caller.project is not None:
        attributes["agentos.project"] = caller.project
    if outcome != "ok":
        attributes["error.type"] = outcome
    return attributes


def _describe(exporter: SpanExporter) -> str:
    endpoint = getattr(exporter, "_endpoint", None)
    return f"OTLP/HTTP {endpoint}" if endpoint else type(exporter).__name__
