"""Who calls the model next: a global in-flight limit and weighted round robin among agents.

Each agent with waiting calls has its own FIFO queue; when a slot frees up the
agent at the head of the ring gets it, and after ``weight`` grants in a row it
moves to the back. A greedy agent with a thousand queued calls therefore delays
another agent by at most one turn of the ring, never by its whole backlog.
A slot covers one attempt (``ratelimits.ModelGate``): a call waiting to retry
gives it back and queues again in its agent's turn.
"""
from __future__ import annotations

import asyncio
from collections import deque


class FairScheduler:
    """Grants at most ``limit`` concurrent slots, fairly across agent keys."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._ring: deque[str] = deque()
        self._weight: dict[str, int] = {}
        self._credit: dict[str, int] = {}
        self._running: dict[str, int] = {}

    async def acquire(self, agent: str, weight: int = 1) -> None:
        """Wait for this agent's turn, then hold a slot until ``release``; cancelling the wait
        gives up the place in the queue."""
        if self.in_flight < self.limit and not self._ring:
            self._grant(agent)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(agent)
        if queue is None:
            queue = self._waiting[agent] = deque()
            self._ring.append(agent)
            self._credit[agent] = max(1, weight)
        self._weight[agent] = max(1, weight)
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(agent)  # granted just as we were cancelled: hand it on
            else:
                self._forget(agent, future)
            raise

    def release(self, agent: str) -> None:
        """Give back a slot ``acquire`` granted to ``agent``."""
        self.in_flight -= 1
        left = self._running.get(agent, 0) - 1
        if left > 0:
            self._running[agent] = left
        else:
            self._running.pop(agent, None)
        self._dispatch()

    def queued(self, agent: str | None = None) -> int:
        """Calls waiting for a slot (of one agent, or in total)."""
        if agent is not None:
            return len(self._waiting.get(agent, ()))
        return sum(len(q) for q in self._waiting.values())

    def running(self, agent: str) -> int:
        """Calls of ``agent`` holding a slot now."""
        return self._running.get(agent, 0)

    def _grant(self, agent: str) -> None:
        self.in_flight += 1
        self._running[agent] = self._running.get(agent, 0) + 1

    def _dispatch(self) -> None:
        while self.in_flight < self.limit and self._ring:
            agent = self._ring[0]
            queue = self._waiting[agent]
            future = queue.popleft()
            # A waiter cancelled a moment ago still sits here until its task runs: skip it.
            granted = not future.done()
            if granted:
                self._grant(agent)
                future.set_result(None)
            credit = self._credit[agent] - granted
            if not queue:
                self._drop(agent)
            elif credit <= 0:
                self._credit[agent] = self._weight[agent]
                self._ring.rotate(-1)
            else:
                self._credit[agent] = credit

    def _forget(self, agent: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(agent)
        if queue is None:
            return
        try:
            queue.remove(future)
        except ValueError:
            return
        if not queue:
            self._drop(agent)

    def _drop(self, agent: str) -> None:
        del self._waiting[agent]
        self._ring.remove(agent)
        self._credit.pop(agent, None)
        self._weight.pop(agent, None)
