"""Per-agent usage accounting and the budgets the kernel enforces on it.

A call is admitted only while the agent is under its token total and its
calls-per-minute rate; tokens are charged when the answer's usage is known, so
the call that crosses the total completes and the next one is refused.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import AgentPolicy
from .errors import ErrorKind, LLMError
from .types import Usage

WINDOW = 60.0


@dataclass
class AgentUsage:
    """What one agent has spent since the kernel started."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    recent: deque[float] = field(default_factory=deque)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors,
                "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens,
                           "total": self.total_tokens}}


class Budgets:
    """Usage per agent key, checked against each agent's policy."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, AgentUsage] = {}

    def usage(self, agent: str) -> AgentUsage:
        entry = self._usage.get(agent)
        if entry is None:
            entry = self._usage[agent] = AgentUsage()
        return entry

    def agents(self) -> list[str]:
        return list(self._usage)

    def admit(self, agent: str, policy: AgentPolicy) -> None:
        """Count a new call, or raise ``budget_exhausted`` (with ``retry_after`` for the rate)."""
        entry = self.usage(agent)
        if policy.max_tokens is not None and entry.total_tokens >= policy.max_tokens:
            raise LLMError(ErrorKind.BUDGET_EXHAUSTED,
                           f"token budget exhausted: {entry.total_tokens} of {policy.max_tokens} "
                           "tokens used", reason="tokens")
        now = self._clock()
        while entry.recent and entry.recent[0] <= now - WINDOW:
            entry.recent.popleft()
        if policy.calls_per_minute is not None and len(entry.recent) >= policy.calls_per_minute:
            raise LLMError(ErrorKind.BUDGET_EXHAUSTED,
                           f"call rate budget exhausted: {policy.calls_per_minute} calls per minute",
                           reason="calls_per_minute",
                           retry_after=entry.recent[0] + WINDOW - now)
        entry.recent.append(now)
        entry.calls += 1

    def charge(self, agent: str, usage: Usage) -> None:
        entry = self.usage(agent)
        entry.prompt_tokens += usage.prompt
        entry.output_tokens += usage.output
        entry.total_tokens += usage.total

    def failed(self, agent: str) -> None:
        self.usage(agent).errors += 1

    def report(self, agent: str, policy: AgentPolicy) -> dict[str, Any]:
        """Usage plus the budget and what is left of it."""
        entry = self.usage(agent)
        out = entry.to_dict()
        out["budget"] = {"tokens": policy.max_tokens, "calls_per_minute": policy.calls_per_minute,
                         "tokens_left": None if policy.max_tokens is None
                         else max(0, policy.max_tokens - entry.total_tokens)}
        return out
