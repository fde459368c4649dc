"""Restart policies: when an ended agent comes back, after how long, and when to give up.

A SPAWN request carries ``restart: {policy, max_restarts, window, backoff, backoff_max}``
(agents.<name>.restart in a manifest). The delay before a restart is ``backoff``
doubled for each restart still inside the window, capped at ``backoff_max``;
one more restart than ``max_restarts`` inside the window marks the agent failed.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.lifecycle import Status
from ..units import parse_duration

POLICIES = ("never", "on-failure", "always")
#: End statuses that count as failures; a clean exit 0 is not one.
FAILURES = Status.SELF_ENDED - {Status.EXITED}

_KEYS = ("policy", "max_restarts", "window", "backoff", "backoff_max")


@dataclass(frozen=True)
class RestartPolicy:
    """One agent's restart policy; durations in seconds."""

    policy: str = "never"
    max_restarts: int = 5
    window: float = 60.0
    backoff: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_request(cls, raw: Mapping[str, Any] | None) -> RestartPolicy:
        """Parse SPAWN's ``restart`` object; raises ValueError naming the bad field."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"restart: expected an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise ValueError(f"restart: unknown field(s) {unknown}; known: {list(_KEYS)}")
        policy = raw.get("policy", cls.policy)
        if policy not in POLICIES:
            raise ValueError(f"restart.policy: {policy!r} is not one of {', '.join(POLICIES)}")
        max_restarts = raw.get("max_restarts", cls.max_restarts)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 1:
            raise ValueError(f"restart.max_restarts: expected a positive integer, got {max_restarts!r}")
        durations = {key: parse_duration(raw.get(key, getattr(cls, key)), f"restart.{key}")
                     for key in ("window", "backoff", "backoff_max")}
        if durations["window"] <= 0:
            raise ValueError("restart.window: must be longer than 0")
        if durations["backoff_max"] < durations["backoff"]:
            raise ValueError("restart.backoff_max: must be at least restart.backoff")
        return cls(policy=policy, max_restarts=max_restarts, **durations)

    def restarts_after(self, status: str) -> bool:
        """Whether an agent that ended with ``status`` is to be restarted at all."""
        if self.policy == "always":
            return status in Status.SELF_ENDED
        if self.policy == "on-failure":
            return status in FAILURES
        return False


class RestartHistory:
    """The restarts of one agent (across its successive processes) inside the policy's window."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._times: deque[float] = deque()
        self.total = 0

    def next_delay(self, now: float) -> float | None:
        """Record a restart decided at ``now`` and return its delay, or None if it would be one too many."""
        while self._times and self._times[0] <= now - self.policy.window:
            self._times.popleft()
        recent = len(self._times)
        if recent >= self.policy.max_restarts:
            return None
        self._times.append(now)
        self.total += 1
        # The exponent is capped so a huge max_restarts cannot overflow the float.
        return min(self.policy.backoff * 2 ** min(recent, 62), self.policy.backoff_max)

    @property
    def recent(self) -> int:
        """Restarts counted in the current window (as of the last decision)."""
        return len(self._times)
