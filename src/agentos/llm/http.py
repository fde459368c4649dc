"""The HTTP layer both providers share: one pooled session, timeouts, error mapping."""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import ujson

from .config import LLMConfig
from .errors import ConnectFailed, ErrorKind, LLMError, error_from_http
from .sse import sse_events

_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def new_session(config: LLMConfig) -> aiohttp.ClientSession:
    """The kernel's one session; its pool is as large as the in-flight limit."""
    connector = aiohttp.TCPConnector(limit=config.max_inflight, limit_per_host=config.max_inflight,
                                     keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, json_serialize=ujson.dumps,
                                 headers={"User-Agent": "agentos-llm"})


class HttpClient:
    """POST JSON, get JSON or a stream of SSE JSON events; failures become ``LLMError``."""

    def __init__(self, session: aiohttp.ClientSession, config: LLMConfig, provider: str) -> None:
        self._session = session
        self._provider = provider
        self._base_url = config.base_url
        self._connect_timeout = config.connect_timeout
        self._json_timeout = aiohttp.ClientTimeout(total=config.timeout,
                                                   sock_connect=config.connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout,
                                                     sock_read=config.stream_idle_timeout)

    async def post_json(self, url: str, body: Mapping[str, Any],
                        headers: Mapping[str, str]) -> dict[str, Any]:
        return await self.send_json("POST", url, body, headers)

    async def send_json(self, method: str, url: str, body: Mapping[str, Any] | None,
                        headers: Mapping[str, str]) -> dict[str, Any]:
        """One request answered with a JSON object; ``body`` None sends none (``DELETE``)."""
        async with self._request(url, body, headers, self._json_timeout, method) as resp:
            try:
                raw = await resp.read()
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                raise self._failure(exc, "no complete answer within the timeout") from None
        return self._decode(raw)

    async def post_events(self, url: str, body: Mapping[str, Any],
                          headers: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Each SSE event's JSON; ``[DONE]`` (OpenAI's end marker) stops the iteration."""
        async with self._request(url, body, headers, self._stream_timeout) as resp:
            try:
                async for data in sse_events(resp.content.iter_any()):
                    if data.strip() == "[DONE]":
                        return
                    yield self._decode(data.encode())
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                raise self._failure(exc, "the stream stalled (no data within "
                                    "stream_idle_timeout)") from None

    @asynccontextmanager
    async def _request(self, url: str, body: Mapping[str, Any] | None, headers: Mapping[str, str],
                       timeout: aiohttp.ClientTimeout,
                       method: str = "POST") -> AsyncIterator[aiohttp.ClientResponse]:
        data = None if body is None else ujson.dumps(body)
        try:
            async with self._session.request(method, url, data=data, headers=headers,
                                             timeout=timeout) as resp:
                if resp.status >= 300:
                    raw = await resp.read()
                    raise error_from_http(resp.status, self._error_body(raw), resp.headers,
                                          self._provider)
                yield resp
        except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
            raise self._failure(exc, "no answer within the timeout") from None

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            value = ujson.loads(raw)
        except (ValueError, TypeError):
            raise LLMError(ErrorKind.UNAVAILABLE, f"{self._provider}: malformed JSON in the answer: "
                           f"{raw[:120]!r}", retryable=True) from None
        if not isinstance(value, dict):
            raise LLMError(ErrorKind.UNAVAILABLE, f"{self._provider}: expected a JSON object, got "
                           f"{type(value).__name__}", retryable=True)
        return value

    @staticmethod
    def _error_body(raw: bytes) -> Any:
        try:
            return ujson.loads(raw)
        except (ValueError, TypeError):
            return raw.decode("utf-8", errors="replace")

    def _failure(self, exc: BaseException, timeout_message: str) -> LLMError:
        # Nothing was sent: the endpoint itself is missing, which the base URL usually explains.
        if isinstance(exc, aiohttp.ClientConnectorError):
            return self._unconnected(_socket_error(exc.os_error))
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self._unconnected(f"no connection within connect_timeout "
                                     f"({self._connect_timeout:g}s)")
        # aiohttp's socket timeouts are both TimeoutError and connection errors: timeout wins.
        if isinstance(exc, asyncio.TimeoutError):
            return LLMError(ErrorKind.TIMEOUT, f"{self._provider}: {timeout_message}", retryable=True)
        return LLMError(ErrorKind.UNAVAILABLE, f"{self._provider}: connection failed: "
                        f"{type(exc).__name__}: {exc}", retryable=True)

    def _unconnected(self, why: str) -> ConnectFailed:
        return ConnectFailed(f"{self._provider}: cannot connect to {self._base_url} ({why}); "
                             "is the server running, and is llm.base_url right?")


def _socket_error(error: OSError) -> str:
    """asyncio words every failed connect "Connect call failed (...)": the errno says why."""
    if error.errno and not isinstance(error, (ssl.SSLError, socket.gaierror)):
        return os.strerror(error.errno).lower()  # connection refused, no route to host ...
    return str(error.strerror or error)
