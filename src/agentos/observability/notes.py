"""What a syscall in progress tells telemetry: SPAWN's steps, THINK's answer, retries and waits.

When telemetry is on, a guard gives each SPAWN and THINK a ``Notes`` in the context of the
task serving it (a ContextVar: the tasks it starts and the observer called after it see the
same one). The services call the functions below as things happen; with telemetry off there
is no ``Notes`` and each call is one ContextVar lookup. Nothing here imports OpenTelemetry.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

#: The W3C trace context header of the environment an agent is started with (as OTel's
#: "environment variables as context propagation carriers" names it).
TRACEPARENT_ENV = "TRACEPARENT"


class Notes:
    """What one SPAWN or THINK noted while it ran."""

    __slots__ = ("call", "live", "mark_ns", "steps", "inner", "events", "answer", "error", "model",
                 "traceparent", "span", "child_traceparent", "spawned")

    def __init__(self, call: Any) -> None:
        #: The syscall these notes are of. Tasks inherit their context, so another call's
        #: task may see them; only this call's observer reads them.
        self.call = call
        #: Until the call's observer has read them. Callbacks the call registered (a pidfd
        #: reader, a timer) run in a copy of its context later; what they do is not its.
        self.live = True
        #: When the current step began (the previous one ended), ``time.time_ns()``.
        self.mark_ns = time.time_ns()
        #: ``(step, start_ns, end_ns)`` in order.
        self.steps: list[tuple[str, int, int]] = []
        #: A step's own steps, by its name (the sandbox's, timed in its child): ``(name, start_ns, end_ns)``.
        self.inner: dict[str, list[tuple[str, int, int]]] | None = None
        #: ``(name, time_ns, attributes)``: a retry, a wait.
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        #: THINK: the model's answer (a ``Completion``), or the ``LLMError`` that ended the call
        #: and the model it came from.
        self.answer: Any = None
        self.error: Any = None
        self.model: str | None = None
        #: THINK's own ``traceparent`` field (other syscalls' are in their decoded request).
        self.traceparent: str | None = None
        #: SPAWN: its span, started before the agent is, whose context the agent inherits.
        self.span: Any = None
        self.child_traceparent: str | None = None
        #: SPAWN: the ``agent.started`` event of the agent it started.
        self.spawned: dict[str, Any] | None = None


NOTES: ContextVar[Notes | None] = ContextVar("agentos_telemetry_notes", default=None)


def current() -> Notes | None:
    """The notes of the syscall running now, if telemetry is on and it is still running."""
    notes = NOTES.get()
    return notes if notes is not None and notes.live else None


def step(name: str, inner: Sequence[tuple[str, int]] = ()) -> None:
    """The step ``name`` ended now; it began where the previous step ended (or the call began).

    ``inner``: the steps it took, each ``(name, time.monotonic_ns() when it ended)`` in order (the
    sandbox's child reports its own so); each began where the previous one ended, the first when
    ``name`` began."""
    notes = current()
    if notes is not None:
        now = time.time_ns()
        if inner:
            # The monotonic clock is the system's, the child's as ours: shifted to wall time here.
            offset = now - time.monotonic_ns()
            begun = notes.mark_ns
            spans = []
            for inner_name, ended in inner:
                spans.append((inner_name, begun, min(ended + offset, now)))
                begun = spans[-1][2]
            notes.inner = {**(notes.inner or {}), name: spans}
        notes.steps.append((name, notes.mark_ns, now))
        notes.mark_ns = now


def event(name: str, attributes: dict[str, Any]) -> None:
    """Something happened inside the call (``gen_ai.retry``, ``gen_ai.wait``)."""
    notes = current()
    if notes is not None:
        notes.events.append((name, time.time_ns(), attributes))


def answered(completion: Any) -> None:
    """THINK's model answered (``llm.types.Completion``, usage and cost filled in)."""
    notes = current()
    if notes is not None:
        notes.answer = completion


def failed(error: Any, model: str) -> None:
    """THINK ended with ``error`` (an ``LLMError``) from ``model``."""
    notes = current()
    if notes is not None:
        notes.error, notes.model = error, model


def traceparent(value: str | None) -> None:
    """THINK's ``traceparent`` field (THINK's payload is read by the gateway, not msgspec)."""
    notes = current()
    if notes is not None:
        notes.traceparent = value


def trace_environment(env: dict[str, str]) -> None:
    """Add ``TRACEPARENT`` (the SPAWN's span) to a new agent's environment, unless the spawner
    set one itself: the agent's own tracing then continues the trace it was started in."""
    notes = current()
    if notes is not None and notes.child_traceparent is not None:
        env.setdefault(TRACEPARENT_ENV, notes.child_traceparent)
