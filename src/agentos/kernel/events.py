"""The kernel's in-process event bus: lifecycle events fan out to whoever listens.

Subsystems publish (``agent.started``, ``agent.exited`` ...: ``protocol.lifecycle.Topic``);
the pub/sub syscalls and supervision subscribe. Topics are dotted names; a pattern
ending in ``.*`` or equal to ``*`` matches a prefix.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("agentos.events")

Listener = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Synchronous fan-out; listeners must not block (schedule work, don't do it)."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str, Listener]] = []

    def subscribe(self, pattern: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(topic, event)`` for every matching event; returns the unsubscribe."""
        entry = (pattern, listener)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` (a ``ts`` field is added) to every matching listener."""
        event = {"topic": topic, "ts": time.time(), **event}
        for pattern, listener in list(self._listeners):
            if topic_matches(pattern, topic):
                try:
                    listener(topic, event)
                except Exception:
                    # One broken listener must not stop the others or the publisher.
                    log.exception("event listener for %r failed on %s", pattern, topic)


def topic_matches(pattern: str, topic: str) -> bool:
    if pattern == "*" or pattern == topic:
        return True
    return pattern.endswith(".*") and topic.startswith(pattern[:-1])
