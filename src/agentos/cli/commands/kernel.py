"""``agentos kernel``: run the kernel daemon in the foreground, under its guardian
(``kernel/guardian.py``): this process waits for the kernel, a child of its own, and kills
whatever the kernel leaves when it exits."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...manifest.schema import LOG_LEVELS

if TYPE_CHECKING:
    from ...kernel.config import KernelConfig
    from ...kernel.daemon import ServiceFactory


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s: %(message)s",
                                "%Y-%m-%dT%H:%M:%S")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kernel", help="run the agentos kernel in the foreground")
    p.add_argument("--socket", type=Path, help="socket path (default: $AGENTOS_SOCKET, "
                   "else /run/agentos/kernel.sock for root, else the user runtime dir)")
    p.add_argument("--state-dir", type=Path, help="where logs, state and contexts live")
    p.add_argument("--socket-mode", type=lambda s: int(s, 8), default=0o600,
                   help="permissions of the socket file, octal (default 600)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="default INFO")
    p.add_argument("--manifest", type=Path, help="take settings (socket, state dir, llm ...) from this "
                   "manifest's kernel section; the options above override them")
    p.add_argument("--max-payload", type=int, help="largest request payload accepted, bytes")
    p.add_argument("--otel", action="store_true", help="export traces (OpenTelemetry, the "
                   "agentos[otel] extra), configured by the standard OTEL_* variables "
                   "(docs/observability.md)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at "
                   "http://HOST:PORT/metrics (loopback only unless --metrics-remote)")
    p.add_argument("--metrics-remote", action="store_true",
                   help="allow --metrics on an address other than loopback")
    p.add_argument("--cluster", metavar="ray://ADDR|ADDR|auto", help="drive this Ray cluster and run "
                   "agents that ask for a node (placement) there (the agentos[ray] extra; docs/cluster.md)")
    p.set_defaults(func=run)


def _telemetry_options(config: KernelConfig, args: argparse.Namespace) -> None:
    """``--otel`` and ``--metrics`` over the manifest's ``telemetry`` section, checked here: a
    bad address is the user's mistake, reported before the kernel starts."""
    from ...observability.telemetry import TelemetrySettings
    from ..main import UserError

    telemetry = config.section("telemetry")
    if args.otel:
        telemetry["traces"] = True
    if args.metrics:
        telemetry["metrics"] = args.metrics
    if args.metrics_remote:
        telemetry["metrics_remote"] = True
    try:
        TelemetrySettings.from_section(telemetry, os.environ)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if telemetry:
        config.sections["telemetry"] = telemetry


def _check_cluster(config: KernelConfig) -> None:
    """The cluster section, checked before the kernel starts (a mistake is the user's)."""
    from ...cluster.settings import ClusterSettings
    from ..main import UserError

    try:
        ClusterSettings.from_section(config.section("cluster"))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace, extra_services: Sequence[ServiceFactory] = ()) -> int:
    """``agentos kernel``; a program that embeds the kernel passes services of its own in
    ``extra_services`` (``Kernel(extra_services=...)``) and keeps these options and the guardian."""
    from ...kernel.collector import Collector
    from ...kernel.config import KernelConfig
    from ...kernel.daemon import Kernel, KernelAlreadyRunning
    from ...kernel.guardian import guard_this_kernel
    from ..launch import private_runtime_dir
    from ..main import UserError

    config = KernelConfig()
    if args.manifest is not None:
        from .validate import load_or_report

        manifest = load_or_report(args.manifest)
        if manifest is None:
            raise UserError(f"{args.manifest} is not a valid manifest (see above)")
        config = manifest.kernel_config()
    config.socket_mode, config.log_json = args.socket_mode, args.log_json
    if args.log_level:
        config.log_level = args.log_level
    setup_logging(config.log_level, args.log_json)
    if args.socket:
        config.socket_path = args.socket
    if args.state_dir:
        config.state_dir = args.state_dir
    if args.max_payload:
        config.max_payload = args.max_payload
    _telemetry_options(config, args)
    if args.cluster:
        config.sections["cluster"] = {**config.section("cluster"), "address": args.cluster}
    if config.section("cluster"):
        _check_cluster(config)
    private_runtime_dir()
    # From here on this process is the kernel's guardian, and the kernel its child.
    guard_this_kernel(config.log_json)
    kernel = Kernel(config, extra_services)
    collector = Collector()
    kernel.when_started(collector.start)
    kernel.when_stopping(collector.stop)
    try:
        kernel.run()
    except KernelAlreadyRunning as exc:
        raise UserError(str(exc)) from None
    # The process exits now: the interpreter's last collections would walk every object left
    # (1.2 of the 1.5 s from the last agent's end to the exit, with 300 ended agents) only to
    # free what the exit frees anyway. Every file and database was closed by its service.
    gc.freeze()
    return 0

