"""Who calls the model next: a global in-flight limit, shared fairly among agents from the first call.

Each agent with waiting calls has its own FIFO queue. A free slot goes to the
waiting agent holding the fewest slots for its weight (``priority``); among
agents holding equally few, the ring decides: the agent at its head is served
``weight`` times, then moves to the back. So slots are shared in proportion to
the weights whenever several agents want more than their share, and a slot
nobody else waits for is never left idle.

An agent's first call starts at once if a slot is free: nothing can be fairer
than one slot each. Its further calls, and every call while all slots are taken,
queue; free slots are handed out at the end of the event-loop turn in which the
calls arrived, so an agent that sends a thousand calls while slots are free
takes its share of them, not all of them, when another agent's calls arrive in
the same turn. An agent arriving later, once the first holds every slot, gets
the next slot that frees up (it holds fewer than the first), and the shares
even out as calls finish: running calls are never interrupted.

A slot covers one attempt (``ratelimits.ModelGate``): a call waiting to retry
gives it back and queues again in its agent's turn.
"""
from __future__ import annotations

import asyncio
from collections import deque

from ..observability import notes


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
        #: The end-of-turn hand-out of free slots, while one is due.
        self._handout: asyncio.Handle | None = None

    def take(self, agent: str) -> bool:
        """Hold a slot until ``release`` if one is free and ``agent`` holds none and waits for
        none (its first call); else False, and ``acquire`` queues for it."""
        if self.in_flight < self.limit and agent not in self._running and agent not in self._waiting:
            self._grant(agent)
            return True
        return False

    async def acquire(self, agent: str, weight: int = 1) -> None:
        """Wait for this agent's turn, then hold a slot until ``release``; cancelling the wait
        gives up the place in the queue."""
        if self.take(agent):
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        queue = self._waiting.get(agent)
        if queue is None:
            queue = self._waiting[agent] = deque()
            self._ring.append(agent)
            self._credit[agent] = max(1, weight)
        self._weight[agent] = max(1, weight)
        queue.append(future)
        if self.in_flight < self.limit and self._handout is None:
            self._handout = loop.call_soon(self._hand_out)
        queued_at = loop.time()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(agent)  # granted just as we were cancelled: hand it on
            else:
                self._forget(agent, future)
            raise
        # Only a call that queued: the usual one that finds a slot free pays nothing here.
        notes.event("agentos.scheduler.wait", {"agentos.wait_s": loop.time() - queued_at})

    def release(self, agent: str) -> None:
        """Give back a slot ``acquire`` granted to ``agent``."""
        self.in_flight -= 1
        left = self._running.get(agent, 0) - 1
        if left > 0:
            self._running[agent] = left
        else:
            self._running.pop(agent, None)
        # While a hand-out is due, calls of this turn may still arrive: it shares the slot.
        if self._handout is None and self._ring:
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

    def _hand_out(self) -> None:
        self._handout = None
        self._dispatch()

    def _dispatch(self) -> None:
        while self.in_flight < self.limit and self._ring:
            agent = self._neediest()
            queue = self._waiting[agent]
            future = queue.popleft()
            # A waiter cancelled a moment ago still sits here until its task runs: skip it.
            if not future.done():
                self._grant(agent)
                future.set_result(None)
                self._spend(agent)
            if not queue:
                self._drop(agent)

    def _neediest(self) -> str:
        """The waiting agent holding the fewest slots for its weight; the first in the ring on a tie."""
        best = self._ring[0]
        best_running, best_weight = self._running.get(best, 0), self._weight[best]
        for agent in self._ring:
            running, weight = self._running.get(agent, 0), self._weight[agent]
            if running * best_weight < best_running * weight:
                best, best_running, best_weight = agent, running, weight
        return best

    def _spend(self, agent: str) -> None:
        """One of ``agent``'s ``weight`` turns at the head of the ring is used up."""
        credit = self._credit[agent] - 1
        if credit > 0:
            self._credit[agent] = credit
            return
        self._credit[agent] = self._weight[agent]
        if len(self._ring) > 1:
            self._ring.remove(agent)
            self._ring.append(agent)

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
