"""EXPOSE's payloads and the open exposure, shared by ``Client`` and ``AsyncClient``.

An EXPOSE is a stream: its one chunk is the exposure (its address), END comes when it
ends. The exposure lives while that stream does: ``close()``, the agent's end or the
client's connection closing ends it.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ..errors import NotFound


def expose_request(agent: str | None, port: int, *, id: str | None = None, tcp: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": id} if id is not None else {"name": agent}
    payload["port"] = port
    if tcp:
        payload["tcp"] = True
    return payload


class _ExposureState:
    """What an exposure is: ``id``, ``path`` (a Unix socket only the caller may connect to),
    ``tcp`` (``127.0.0.1:PORT`` when asked for), ``address`` (``tcp`` if any, else ``path``);
    ``result`` its counts once it ended."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = dict(info)
        self.id: str = info["id"]
        self.port: int = info["port"]
        self.path: str = info["path"]
        self.tcp: str | None = info.get("tcp")
        self.address: str = self.tcp or self.path
        self.result: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<exposure {self.id} of port {self.port} at {self.address}>"


class Exposure(_ExposureState):
    """An open exposure; ``close()`` (or leaving ``with``) ends it and returns its counts."""

    def __init__(self, client: Any, items: Iterator[Any], info: Mapping[str, Any]) -> None:
        super().__init__(info)
        self._client = client
        self._items = items

    def wait(self) -> dict[str, Any]:
        """Until the exposure ends (its agent ended, or someone unexposed it): its counts."""
        for item in self._items:
            self.result = item
        assert self.result is not None
        return self.result

    def close(self) -> dict[str, Any]:
        """End the exposure (``unexpose``) and wait for its end: its counts."""
        if self.result is None:
            try:
                self._client.unexpose(self.id)
            except NotFound:
                pass  # it ended meanwhile: its end is on the way
        return self.wait()

    def __enter__(self) -> Exposure:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncExposure(_ExposureState):
    """An open exposure; ``await close()`` (or leaving ``async with``) ends it and returns its counts."""

    def __init__(self, client: Any, items: AsyncIterator[Any], info: Mapping[str, Any]) -> None:
        super().__init__(info)
        self._client = client
        self._items = items

    async def wait(self) -> dict[str, Any]:
        """Until the exposure ends (its agent ended, or someone unexposed it): its counts."""
        async for item in self._items:
            self.result = item
        assert self.result is not None
        return self.result

    async def close(self) -> dict[str, Any]:
        """End the exposure (``unexpose``) and wait for its end: its counts."""
        if self.result is None:
            try:
                await self._client.unexpose(self.id)
            except NotFound:
                pass  # it ended meanwhile: its end is on the way
        return await self.wait()

    async def __aenter__(self) -> AsyncExposure:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
