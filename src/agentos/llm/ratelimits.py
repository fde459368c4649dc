"""Rate limits per model and endpoint, as their servers asked for them.

A 429 (or 503) carrying ``RetryInfo`` / ``Retry-After`` pauses only the model
that sent it: calls to that model wait out the delay without a scheduler slot,
calls to any other model are never delayed by it. The pause is shared by every
call to the model, so a call arriving during it does not hit the server again
only to be told the same thing.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .scheduler import FairScheduler


def model_key(endpoint: str, model: str) -> str:
    """One rate limit per endpoint and model (``models/x`` and ``x`` are the same model)."""
    return f"{endpoint.rstrip('/')}|{model.removeprefix('models/')}"


class RateLimits:
    """When each model may be called again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def hold(self, key: str) -> float:
        """Seconds before ``key`` may be called again; 0 when it may be now."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left > 0:
            return left
        del self._until[key]
        return 0.0

    def limited(self, key: str, delay: float) -> None:
        """The server of ``key`` asked for ``delay`` seconds without calls; a pause only grows."""
        now = self._clock()
        # Forget pauses that are over, so models asked once do not pile up.
        for other in [k for k, until in self._until.items() if until <= now]:
            del self._until[other]
        until = now + max(0.0, delay)
        if until > self._until.get(key, now):
            self._until[key] = until

    def gate(self, key: str, scheduler: FairScheduler, agent: str, weight: int = 1) -> ModelGate:
        """The way one call of ``agent`` to model ``key`` takes for each attempt."""
        return ModelGate(self, key, scheduler, agent, weight)


@dataclass(frozen=True)
class ModelGate:
    """A ``retry.Gate``: the model's pause, then the agent's turn for a slot in the scheduler."""

    limits: RateLimits
    key: str
    scheduler: FairScheduler
    agent: str
    weight: int = 1

    def hold(self) -> float:
        return self.limits.hold(self.key)

    def limited(self, delay: float) -> None:
        self.limits.limited(self.key, delay)

    def slot(self) -> ModelGate:
        # The gate is its own context manager: every THINK passes here, and a generator-based
        # one (asynccontextmanager) costs several times the acquire and release themselves.
        return self

    async def __aenter__(self) -> None:
        # A free slot is taken without a coroutine of acquire's own: most attempts find one.
        if not self.scheduler.take(self.agent):
            await self.scheduler.acquire(self.agent, self.weight)

    async def __aexit__(self, *exc: object) -> None:
        self.scheduler.release(self.agent)
