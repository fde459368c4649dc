"""Agents as the CLI shows them: the rows of ``ps`` and ``top``."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .output import duration, size

#: Columns of ``agentos ps``; ``top`` shows CPU as a percentage instead of seconds.
PS_COLUMNS = ("NAME", "ID", "PID", "STATUS", "UPTIME", "RESTARTS", "MEMORY", "CPU", "TOKENS")


def latest(agents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per name: the running process, else the one that started last (earlier restarts hidden)."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for info in agents:
        current = chosen.get(info["name"])
        if current is None or _rank(info) > _rank(current):
            chosen[info["name"]] = info
    return list(chosen.values())


def _rank(info: Mapping[str, Any]) -> tuple[bool, float]:
    return info["status"] == "running", info["started_at"]


def tokens_by_id(usage: Mapping[str, Any]) -> dict[str, int]:
    """Total LLM tokens per agent id, from a USAGE reply."""
    return {key.removeprefix("agent:"): report["tokens"]["total"]
            for key, report in usage.get("agents", {}).items() if key.startswith("agent:")}


def status_text(info: Mapping[str, Any]) -> str:
    """``running``, ``exited (0)``, ``failed (1)``, ``failed (signal 11)``, ``oom_killed``, ``killed``."""
    status = info["status"]
    if status in ("exited", "failed"):
        if info.get("exit_code") is not None:
            return f"{status} ({info['exit_code']})"
        if info.get("signal") is not None:
            return f"{status} (signal {info['signal']})"
    return str(status)


def row(info: Mapping[str, Any], tokens: Mapping[str, int], cpu: str, now: float | None = None) -> list[str]:
    """One agent in PS_COLUMNS order; ``cpu`` is already formatted (seconds for ps, percent for top)."""
    now = time.time() if now is None else now
    running = info["status"] == "running"
    usage = info.get("usage") or {}
    memory = usage.get("memory_current") if running else None
    spent = tokens.get(info["id"], 0)
    return [info["name"], info["id"], str(info["pid"]), status_text(info),
            duration(now - info["started_at"]) if running else "-", str(info.get("restarts", 0)),
            size(memory) if memory is not None else "-", cpu, str(spent) if spent else "-"]


def cpu_seconds(info: Mapping[str, Any]) -> str:
    """CPU time the agent's cgroup has used, e.g. ``1.25s``; ``-`` where the host cannot tell."""
    usec = (info.get("usage") or {}).get("cpu_usage_usec")
    return "-" if usec is None else f"{usec / 1e6:.2f}s"


def order(agents: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Running agents first, then by start time."""
    return sorted(agents, key=lambda info: (info["status"] != "running", info["started_at"]))
