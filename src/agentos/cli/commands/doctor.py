"""``agentos doctor``: what this host and its kernel can do, and what to fix."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from typing import Any

from ...errors import AgentOSError
from ..launch import add_socket_option, connect, socket_path

#: Exit status when something agentos needs is missing (warnings alone leave it 0).
_BROKEN = 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check this host's isolation support, cgroups, kernel and LLM keys")
    add_socket_option(p)
    p.set_defaults(func=run)


class _Report:
    def __init__(self) -> None:
        self.failed = False

    def line(self, level: str, what: str, detail: str) -> None:
        self.failed |= level == "FAIL"
        print(f"{level:<4}  {what}: {detail}")


def run(args: argparse.Namespace) -> int:
    report = _Report()
    _python(report)
    _cgroups(report)
    _sandbox(report)
    hello = _kernel(report, args)
    _llm_keys(report)
    _llm_endpoint(report, hello)
    return _BROKEN if report.failed else 0


def _python(report: _Report) -> None:
    from ... import protocol  # noqa: F401  (importing it decides which twins load)
    from ..._extensions import EXTENSIONS_LOADED

    version = ".".join(map(str, sys.version_info[:3]))
    report.line("ok" if sys.version_info >= (3, 11) else "FAIL", "python", version)
    missing = sorted(name for name, loaded in EXTENSIONS_LOADED.items() if not loaded)
    if missing:
        report.line("warn", "compiled modules", f"using the pure-Python twins of {', '.join(missing)} "
                    "(slower); reinstall agentos to build them")
    else:
        report.line("ok", "compiled modules", ", ".join(sorted(EXTENSIONS_LOADED)) or "none needed yet")


def _cgroups(report: _Report) -> None:
    from ...cgroups import detect, open_driver

    layout = detect()
    driver = open_driver(layout)
    enforceable = sorted(driver.enforceable)
    if set(enforceable) >= {"memory", "pids", "cpu"}:
        report.line("ok", "cgroups", f"{layout.kind} host, {driver.name} driver enforces {', '.join(enforceable)}")
    else:
        report.line("warn", "cgroups", f"{layout.kind} host: only {', '.join(enforceable) or 'nothing'} can be "
                    "enforced; spawns asking for other limits fail unless allow_degraded")


def _sandbox(report: _Report) -> None:
    try:
        from ...sandbox.probe import probe

        support = probe()
    except (ImportError, OSError) as exc:
        report.line("FAIL", "sandbox", f"cannot probe this host ({exc}); agents can only run with the sandbox off")
        return
    missing = sorted(name for name, ok in support.namespaces.items() if not ok)
    if missing:
        notes = "; ".join(f"{name}: {support.notes.get(name, 'unavailable')}" for name in missing)
        report.line("warn", "namespaces", f"unavailable: {notes}")
    else:
        report.line("ok", "namespaces", ", ".join(sorted(support.namespaces)))
    if not support.root:
        report.line("ok" if support.user_namespaces else "warn", "rootless",
                    "user namespaces work" if support.user_namespaces
                    else f"no user namespaces ({support.notes.get('user', 'unavailable')}): run the kernel as root")
    report.line("ok" if support.seccomp else "warn", "seccomp",
                "filters available" if support.seccomp else support.notes.get("seccomp", "unavailable"))
    report.line("ok" if support.landlock_abi else "warn", "landlock",
                f"ABI {support.landlock_abi}" if support.landlock_abi else support.notes.get("landlock", "off"))


def _kernel(report: _Report, args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        with connect(args) as client:
            hello: dict[str, Any] = client.hello()
    except AgentOSError as exc:
        report.line("info", "kernel", f"none reachable at {socket_path(args.socket)} ({exc.__class__.__name__}); "
                    "`agentos up FILE` or `agentos kernel` starts one")
        return None
    report.line("ok", "kernel", f"agentos {hello['version']}, pid {hello['pid']}, "
                f"{len(hello.get('syscalls', []))} syscalls, at {socket_path(args.socket)}")
    return hello


def _llm_keys(report: _Report) -> None:
    found = [name for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY") if os.environ.get(name)]
    if found:
        report.line("ok", "LLM keys", f"{', '.join(found)} set here (the kernel reads its own environment)")
    else:
        report.line("warn", "LLM keys", "none set here; export GEMINI_API_KEY where the kernel runs to use THINK")


def _llm_endpoint(report: _Report, hello: dict[str, Any] | None) -> None:
    """The running kernel's check of its model endpoint; with no kernel, a check of the endpoint
    this shell's environment configures (``AGENTOS_LLM_CONFIG``, ``AGENTOS_*_BASE_URL``, keys)."""
    from ...llm.config import LLMConfig, environment_section
    from ...llm.probe import EndpointStatus, probe_config

    if hello is not None:
        raw = hello.get("capabilities", {}).get("llm", {}).get("endpoint")
        if raw is None:
            return  # a kernel from before the check
        status = EndpointStatus.from_dict(raw)
        source = "" if status.checked_at is None else (
            f" (checked by the kernel at "
            f"{datetime.datetime.fromtimestamp(status.checked_at):%H:%M:%S})")
    else:
        try:
            config = LLMConfig.from_section(environment_section(os.environ), os.environ)
        except ValueError as exc:
            report.line("FAIL", "LLM endpoint", f"this environment's llm configuration: {exc}")
            return
        status = asyncio.run(probe_config(config))
        source = " (checked from here, as this environment configures it)"
    level = {"ok": "ok", "unreachable": "FAIL", "key_refused": "FAIL", "error": "warn"}
    report.line(level.get(status.state, "info"), "LLM endpoint", status.summary() + source)
