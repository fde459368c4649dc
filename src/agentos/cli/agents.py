"""Agents as the CLI shows them: the rows of ``ps`` and ``top``."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.lifecycle import Status
from .output import Painter, duration, size

#: Columns of ``agentos ps``; ``top`` shows CPU as a percentage instead of seconds.
PS_COLUMNS = ("NAME", "ID", "PID", "STATUS", "UPTIME", "RESTARTS", "MEMORY", "CPU", "TOKENS", "USD")


def latest(agents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per agent (name within its project): the running process, else the one that started
    last (earlier restarts hidden)."""
    chosen: dict[tuple[str | None, str], Mapping[str, Any]] = {}
    for info in agents:
        # Two projects' agents of one name are two agents.
        key = info.get("project"), info["name"]
        current = chosen.get(key)
        if current is None or _rank(info) > _rank(current):
            chosen[key] = info
    return list(chosen.values())


def _rank(info: Mapping[str, Any]) -> tuple[bool, float]:
    return info["status"] in Status.LIVE, info["started_at"]


@dataclass(frozen=True)
class Spent:
    """What an agent has spent on THINK: tokens, and US dollars by the kernel's price table."""

    tokens: int = 0
    usd: float = 0.0


def spent_by_id(usage: Mapping[str, Any]) -> dict[str, Spent]:
    """LLM spending per agent id, from a USAGE reply."""
    return {key.removeprefix("agent:"): Spent(report["tokens"]["total"], report.get("cost_usd") or 0.0)
            for key, report in usage.get("agents", {}).items() if key.startswith("agent:")}


def usd(amount: float) -> str:
    """``$0.0123``: four decimals, enough for a cent's fractions; ``-`` for nothing."""
    return f"${amount:.4f}" if amount else "-"


def status_text(info: Mapping[str, Any]) -> str:
    """``running``, ``paused``, ``exited (0)``, ``failed (1)``, ``failed (signal 11)``, ``oom_killed``,
    ``killed``, ``timed_out (timeout)``."""
    status = info["status"]
    if status in ("exited", "failed"):
        if info.get("exit_code") is not None:
            return f"{status} ({info['exit_code']})"
        if info.get("signal") is not None:
            return f"{status} (signal {info['signal']})"
    if status == "timed_out" and info.get("reason"):
        return f"{status} ({info['reason']})"
    return str(status)


def row(info: Mapping[str, Any], spending: Mapping[str, Spent], cpu: str, now: float | None = None) -> list[str]:
    """One agent in PS_COLUMNS order; ``cpu`` is already formatted (seconds for ps, percent for top)."""
    now = time.time() if now is None else now
    running = info["status"] in Status.LIVE
    usage = info.get("usage") or {}
    memory = usage.get("memory_current") if running else None
    spent = spending.get(info["id"], Spent())
    # No pid yet: an agent pending on a cluster, waiting for a node.
    return [info["name"], info["id"], str(info["pid"] or "-"), status_text(info),
            duration(now - info["started_at"]) if running else "-", str(info.get("restarts", 0)),
            size(memory) if memory is not None else "-", cpu, str(spent.tokens) if spent.tokens else "-",
            usd(spent.usd)]


def cpu_seconds(info: Mapping[str, Any]) -> str:
    """CPU time the agent's cgroup has used, e.g. ``1.25s``; ``-`` where the host cannot tell."""
    usec = (info.get("usage") or {}).get("cpu_usage_usec")
    return "-" if usec is None else f"{usec / 1e6:.2f}s"


def order(agents: Sequence[Mapping[str, Any]], by: str = "started",
          spending: Mapping[str, Spent] | None = None) -> list[Mapping[str, Any]]:
    """Running agents first, then by ``by`` (one of SORT_KEYS; the biggest first for amounts)."""
    spent = spending or {}
    value = SORT_KEYS[by]
    return sorted(agents, key=lambda info: (info["status"] not in Status.LIVE,
                                            value(info, spent.get(info["id"], Spent()))))


def _usage(name: str) -> Any:
    return lambda info, spent: -((info.get("usage") or {}).get(name) or 0)


#: ``--sort`` keys of ps and top: how each orders agents (amounts descending, the rest ascending).
SORT_KEYS: dict[str, Any] = {
    "started": lambda info, spent: info["started_at"],
    "name": lambda info, spent: info["name"],
    "status": lambda info, spent: status_text(info),
    "restarts": lambda info, spent: -info.get("restarts", 0),
    "memory": _usage("memory_current"),
    "cpu": _usage("cpu_usage_usec"),
    "tokens": lambda info, spent: -spent.tokens,
    "usd": lambda info, spent: -spent.usd,
}

#: How a status looks on a terminal.
STATUS_STYLES = {"running": "green", "paused": "yellow", "failed": "red", "oom_killed": "red",
                 "timed_out": "red", "lost": "red", "exited": "dim", "killed": "dim"}


def paint_status(text: str, infos: Sequence[Mapping[str, Any]], paint: Painter) -> str:
    """``table(PS_COLUMNS, ...)`` of ``infos`` with each STATUS cell coloured (after the table has
    aligned the plain text: escape codes have no width)."""
    if not paint.enabled:
        return text
    header, *lines = text.split("\n")
    start = header.index("STATUS")
    painted = [header]
    for line, info in zip(lines, infos):
        cell = status_text(info)
        painted.append(line[:start] + paint.style(cell, STATUS_STYLES.get(info["status"], "bold"))
                       + line[start + len(cell):])
    return "\n".join(painted)
