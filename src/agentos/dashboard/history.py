"""What the dashboard remembers between page loads: a few minutes of each agent's cgroup usage
and each LLM account's spending, sampled with LIST and USAGE, and the topics seen on SUBSCRIBE.

The kernel keeps no history of its own; a sample every ``interval`` seconds, kept for
``keep`` samples, is enough for a sparkline and costs the kernel two syscalls.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..client import AsyncClient
from ..errors import AgentOSError, ConnectionClosed, PermissionDenied
from ..protocol.lifecycle import Status

log = logging.getLogger(__name__)


@dataclass
class Series:
    """Timestamped samples, oldest first."""

    keep: int
    points: deque[tuple[float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.points = deque(maxlen=self.keep)

    def add(self, at: float, value: float) -> None:
        self.points.append((at, value))

    def values(self) -> list[float]:
        return [value for _, value in self.points]

    def rates(self) -> list[float]:
        """The per-second rate between consecutive samples (of a counter such as CPU µs)."""
        pairs = list(self.points)
        return [max(0.0, (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(pairs, pairs[1:]) if b[0] > a[0]]


@dataclass
class TopicSeen:
    count: int = 0
    last: float = 0.0


class History:
    """Samples of LIST and USAGE, and SUBSCRIBE ``*``'s topics, over one kernel connection."""

    def __init__(self, interval: float, keep: int = 90) -> None:
        self.interval = interval
        self.keep = keep
        #: Per agent id: memory.current bytes, CPU µs (a counter).
        self.memory: dict[str, Series] = {}
        self.cpu: dict[str, Series] = {}
        #: Per USAGE account: total tokens and USD spent (counters).
        self.tokens: dict[str, Series] = {}
        self.usd: dict[str, Series] = {}
        self.topics: dict[str, TopicSeen] = {}
        #: What the last LIST could not read, said on the page rather than hidden.
        self.problem: str | None = None
        #: Whether USAGE answered this user (it needs `think`); the THINK view sets it again.
        self.usage_allowed = True

    def _series(self, table: dict[str, Series], key: str) -> Series:
        series = table.get(key)
        if series is None:
            series = table[key] = Series(self.keep)
        return series

    def record_agents(self, agents: Sequence[Mapping[str, Any]], at: float) -> None:
        live = set()
        for agent in agents:
            usage = agent.get("usage") or {}
            live.add(agent["id"])
            if agent.get("status") in Status.LIVE:
                if usage.get("memory_current") is not None:
                    self._series(self.memory, agent["id"]).add(at, usage["memory_current"])
                if usage.get("cpu_usage_usec") is not None:
                    self._series(self.cpu, agent["id"]).add(at, usage["cpu_usage_usec"])
        # Agents LIST no longer shows are forgotten, so a long-running kernel costs no memory here.
        for table in (self.memory, self.cpu):
            for gone in set(table) - live:
                del table[gone]

    def record_usage(self, usage: Mapping[str, Any], at: float) -> None:
        for key, account in (usage.get("agents") or {}).items():
            self._series(self.tokens, key).add(at, account["tokens"]["total"])
            self._series(self.usd, key).add(at, account["cost_usd"])

    def record_event(self, event: Mapping[str, Any]) -> None:
        seen = self.topics.setdefault(str(event.get("topic")), TopicSeen())
        seen.count += 1
        seen.last = float(event.get("ts") or time.time())

    async def sample(self, client: AsyncClient) -> None:
        """Every ``interval``: LIST and USAGE into the series (until cancelled)."""
        while True:
            now = time.time()
            try:
                self.record_agents(await client.list_agents(), now)
                self.problem = None
            except ConnectionClosed:
                raise  # the dashboard ends with its kernel
            except AgentOSError as exc:
                self.problem = str(exc)
            if self.usage_allowed:
                try:
                    self.record_usage(await client.usage(), now)
                except PermissionDenied:
                    # A user without `think` has no spending to chart; asking again every sample
                    # would fill the audit log with denials. The THINK view asks when opened.
                    self.usage_allowed = False
            await asyncio.sleep(self.interval)

    async def watch_topics(self, client: AsyncClient) -> None:
        """Count each topic SUBSCRIBE ``*`` shows this user (the kernel filters what it may see)."""
        try:
            async with await client.subscribe("*") as events:
                async for event in events:
                    self.record_event(event)
        except AgentOSError as exc:
            log.warning("dashboard: no topic events: %s", exc)
