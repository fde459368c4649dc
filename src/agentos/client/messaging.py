"""Messaging requests for both clients: payload building, checked before they leave, and
the subscription objects ``subscribe`` returns."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Self

from ..errors import InvalidArgument
from ._common import reply_object


def send_request(to: str, body: Any) -> dict[str, Any]:
    if not isinstance(to, str) or not to:
        raise InvalidArgument(f"send: 'to' must be an agent name or id, got {to!r}")
    return {"to": to, "body": body}


def recv_request(timeout: float | None, name: str | None, ack: bool,
                 max_deliveries: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {"ack": ack}
    if timeout is not None:
        args["timeout"] = timeout
    if name is not None:
        args["name"] = name
    if max_deliveries is not None:
        args["max_deliveries"] = max_deliveries
    return args


def dead_letters_request(action: str, *, mailbox: str | None = None, name: str | None = None,
                         limit: int | None = None, ids: tuple[int, ...] = (),
                         project: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"action": action}
    if action not in ("list", "stats"):
        if not ids:
            raise InvalidArgument(f"{action}: give at least one dead letter id")
        args["ids"] = list(ids)
    for key, value in (("mailbox", mailbox), ("name", name), ("limit", limit), ("project", project)):
        if value is not None:
            args[key] = value
    return args


def ack_request(ids: tuple[int, ...], name: str | None) -> dict[str, Any]:
    if not ids:
        raise InvalidArgument("ack: give at least one message id")
    args: dict[str, Any] = {"ids": list(ids)}
    if name is not None:
        args["name"] = name
    return args


def subscribe_request(topics: tuple[str, ...]) -> dict[str, Any]:
    if not topics:
        raise InvalidArgument("subscribe: give at least one topic or pattern ('agent.*')")
    return {"topics": list(topics)}


def _subscription_id(first: Any) -> tuple[int, list[str]]:
    if not isinstance(first, dict) or "subscribed" not in first:
        raise InvalidArgument(f"the kernel did not confirm the subscription: {first!r}")
    return int(first["subscribed"]), list(first.get("topics", []))


class Subscription:
    """Events of a SUBSCRIBE, as an iterator; ends after ``close()`` (or UNSUBSCRIBE)."""

    def __init__(self, frames: Iterator[Any], first: Any, unsubscribe: Callable[[int], None]) -> None:
        self._frames = frames
        self._unsubscribe = unsubscribe
        self.id, self.topics = _subscription_id(first)
        self._ended = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._ended:
            raise StopIteration
        frame = reply_object(next(self._frames))
        if "unsubscribed" in frame and "topic" not in frame:
            self._ended = True
            raise StopIteration
        return frame

    def close(self) -> None:
        """Unsubscribe and discard whatever was still in flight."""
        if self._ended:
            return
        self._unsubscribe(self.id)
        for _ in self:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription:
    """Events of a SUBSCRIBE, as an async iterator; ends after ``close()`` (or UNSUBSCRIBE)."""

    def __init__(self, frames: AsyncIterator[Any], first: Any,
                 unsubscribe: Callable[[int], Any]) -> None:
        self._frames = frames
        self._unsubscribe = unsubscribe
        self.id, self.topics = _subscription_id(first)
        self._ended = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._ended:
            raise StopAsyncIteration
        frame = reply_object(await self._frames.__anext__())
        if "unsubscribed" in frame and "topic" not in frame:
            self._ended = True
            raise StopAsyncIteration
        return frame

    async def close(self) -> None:
        """Unsubscribe and discard whatever was still in flight."""
        if self._ended:
            return
        await self._unsubscribe(self.id)
        async for _ in self:
            pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
