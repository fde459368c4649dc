"""Traces and metrics of the kernel (``docs/observability.md``).

``notes`` is what the kernel's services import: how a syscall in progress tells telemetry
what happened (SPAWN's steps, THINK's answer). ``telemetry`` decides what is on and is the
kernel service; ``otel`` (spans, OpenTelemetry) and ``metrics``/``prometheus`` (the
Prometheus endpoint) are imported only when they are on, so without the ``agentos[otel]``
extra, or with telemetry off, none of OpenTelemetry or prometheus_client is ever imported.
"""
