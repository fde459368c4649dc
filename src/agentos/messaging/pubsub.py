"""Topic subscriptions over the kernel event bus, each a bounded queue feeding one stream.

A subscriber that does not keep up loses the oldest events, never kernel
memory: its queue holds at most ``backlog`` events and the next frame it gets
says how many were dropped. A subscription gets only the events its ``visible``
rule lets it see (``mail.dead`` is for the mailbox's owner and admins).
"""
from __future__ import annotations

import asyncio
import itertools
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgument
from ..kernel.events import EventBus

#: Whether a subscriber may see an event: ``visible(topic, event)``.
Visibility = Callable[[str, dict[str, Any]], bool]

_TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

#: Topics only the kernel (or an admin) publishes: lifecycle and mail events must not be forged.
SYSTEM_PREFIXES = ("agent.", "kernel.", "mail.")


def check_topic(topic: Any) -> str:
    """A concrete topic to publish to: dotted words, no wildcard."""
    if not isinstance(topic, str) or len(topic) > 200 or not _TOPIC.fullmatch(topic):
        raise InvalidArgument(f"topic must be dotted words such as 'jobs.done', got {topic!r}",
                              field="topic")
    return topic


def check_pattern(pattern: Any) -> str:
    """A subscription pattern: a topic, ``prefix.*`` or ``*``."""
    if pattern == "*":
        return pattern
    if isinstance(pattern, str) and pattern.endswith(".*"):
        check_topic(pattern[:-2])
        return pattern
    return check_topic(pattern)


def is_system_topic(topic: str) -> bool:
    return topic.startswith(SYSTEM_PREFIXES)


class Subscription:
    """One SUBSCRIBE: the patterns, the owner, and the events waiting to be streamed."""

    def __init__(self, bus: EventBus, sub_id: int, owner: str, patterns: list[str],
                 backlog: int, visible: Visibility) -> None:
        self.id = sub_id
        self.owner = owner
        self.patterns = patterns
        self.visible = visible
        self.dropped = 0
        self.closed = False
        self._events: deque[dict[str, Any]] = deque(maxlen=backlog)
        self._wakeup = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = [
            bus.subscribe(pattern, self.deliver) for pattern in dict.fromkeys(patterns)]

    def deliver(self, topic: str, event: dict[str, Any]) -> None:
        if not self.visible(topic, event):
            return
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving; the stream ends after it drains what it already has."""
        self.closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._wakeup.set()

    async def next(self) -> dict[str, Any] | None:
        """The next frame to stream, or None once closed and drained."""
        while True:
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                return {"topic": "subscription.dropped", "dropped": dropped}
            if self._events:
                return self._events.popleft()
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()


class PubSub:
    """Every live subscription of this kernel."""

    def __init__(self, bus: EventBus, backlog: int = 256) -> None:
        self.bus = bus
        self.backlog = backlog
        self._ids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}

    def open(self, owner: str, patterns: list[str], visible: Visibility) -> Subscription:
        sub = Subscription(self.bus, next(self._ids), owner, patterns, self.backlog, visible)
        self._subs[sub.id] = sub
        return sub

    def get(self, sub_id: int) -> Subscription | None:
        return self._subs.get(sub_id)

    def discard(self, sub: Subscription) -> None:
        sub.close()
        self._subs.pop(sub.id, None)

    def close_all(self) -> None:
        for sub in list(self._subs.values()):
            self.discard(sub)
