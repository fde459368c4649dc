"""Run as a script: ``python traced_kernel.py OUT.json [agentos kernel options]``.

A kernel in a process whose own OpenTelemetry SDK sends spans to the SDK's in-memory
exporter (as a program embedding the kernel would set up its tracing); when the kernel
stops, the spans are written to OUT.json for the test to read.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def as_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {"name": span.name, "kind": span.kind.name, "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "status": span.status.status_code.name, "start": span.start_time, "end": span.end_time,
            "attributes": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in (span.attributes or {}).items()},
            "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events]}


def main(argv: list[str]) -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    import argparse

    from agentos.cli.commands import kernel as kernel_command
    from agentos.kernel.config import KernelConfig
    from agentos.kernel.daemon import Kernel
    parser = argparse.ArgumentParser()
    kernel_command.register(parser.add_subparsers())
    args = parser.parse_args(["kernel", *argv[1:]])
    kernel_command.setup_logging(args.log_level, args.log_json)
    config = KernelConfig(socket_path=args.socket, state_dir=args.state_dir, log_level=args.log_level)
    config.sections["telemetry"] = {"traces": True}
    try:
        Kernel(config).run()
    finally:
        with open(argv[0], "w") as out:
            json.dump([as_json(s) for s in exporter.get_finished_spans()], out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
