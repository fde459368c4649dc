"""Per-agent usage accounting and the budgets the kernel enforces on it.

Usage is reported per caller key (``agent:<id>``), but budgets are charged to
the caller's account (its name, see ``callers``), so an agent restarted under a
new id cannot start over with a fresh budget. A call is admitted only while the
account is under its token total and its calls-per-minute rate; tokens are
charged once the answer is known to reach the client (an answer refused as
too large for it is not charged), so the call that crosses the total completes
and the next one is refused.
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
    """What one caller key has spent since the kernel started."""

    account: str
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors,
                "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens,
                           "total": self.total_tokens}}


@dataclass
class Account:
    """What the budget looks at: tokens spent and recent call times, across restarts."""

    total_tokens: int = 0
    recent: deque[float] = field(default_factory=deque)


class Budgets:
    """Usage per caller key, budgets per account, checked against each caller's policy."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, AgentUsage] = {}
        self._accounts: dict[str, Account] = {}

    def usage(self, key: str, account: str | None = None) -> AgentUsage:
        entry = self._usage.get(key)
        if entry is None:
            entry = self._usage[key] = AgentUsage(account=account or key)
        return entry

    def agents(self) -> list[str]:
        return list(self._usage)

    def admit(self, key: str, account: str, policy: AgentPolicy) -> None:
        """Count a new call, or raise ``budget_exhausted`` (with ``retry_after`` for the rate)."""
        entry = self.usage(key, account)
        spent = self._account(account)
        if policy.max_tokens is not None and spent.total_tokens >= policy.max_tokens:
            raise LLMError(ErrorKind.BUDGET_EXHAUSTED,
                           f"token budget exhausted: {spent.total_tokens} of {policy.max_tokens} "
                           "tokens used", reason="tokens")
        now = self._clock()
        while spent.recent and spent.recent[0] <= now - WINDOW:
            spent.recent.popleft()
        if policy.calls_per_minute is not None and len(spent.recent) >= policy.calls_per_minute:
            raise LLMError(ErrorKind.BUDGET_EXHAUSTED,
                           f"call rate budget exhausted: {policy.calls_per_minute} calls per minute",
                           reason="calls_per_minute",
                           retry_after=spent.recent[0] + WINDOW - now)
        spent.recent.append(now)
        entry.calls += 1

    def charge(self, key: str, usage: Usage) -> None:
        entry = self.usage(key)
        entry.prompt_tokens += usage.prompt
        entry.output_tokens += usage.output
        entry.total_tokens += usage.total
        self._account(entry.account).total_tokens += usage.total

    def failed(self, key: str) -> None:
        self.usage(key).errors += 1

    def report(self, key: str, policy: AgentPolicy) -> dict[str, Any]:
        """Usage plus the budget and what is left of it."""
        entry = self.usage(key)
        out = entry.to_dict()
        spent = self._account(entry.account).total_tokens
        out["budget"] = {"tokens": policy.max_tokens, "calls_per_minute": policy.calls_per_minute,
                         "tokens_left": None if policy.max_tokens is None
                         else max(0, policy.max_tokens - spent)}
        return out

    def _account(self, account: str) -> Account:
        spent = self._accounts.get(account)
        if spent is None:
            spent = self._accounts[account] = Account()
        return spent
