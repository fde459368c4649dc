"""The HTTP layer both providers share: one pooled session, timeouts, error mapping.

The kernel's session is ``lean_http.LeanSession``. An ``aiohttp.ClientSession`` is taken too
(``make_provider(config, session)``): a caller's own session then carries every request, with
its connector, proxy settings and tracing; the kernel itself never uses one for model calls.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import ujson

from .config import LLMConfig
from .errors import ConnectFailed, ErrorKind, LLMError, error_from_http
from .lean_http import ConnectError, LeanSession, socket_error
from .sse import sse_events

#: What a broken connection raises: lean_http's errors are ConnectionErrors (OSError) too.
_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)

#: A session the providers send through: the kernel's own (``new_session``), or an aiohttp session
#: a caller brings (its connector, proxy or tracing then carry every request, as before lean_http).
HttpSession = LeanSession | aiohttp.ClientSession


def new_session(config: LLMConfig) -> LeanSession:
    """The kernel's one session; it keeps up to ``max_inflight`` idle connections per host."""
    return LeanSession(max_idle=config.max_inflight)


class HttpClient:
    """POST JSON, get JSON or a stream of SSE JSON events; failures become ``LLMError``."""

    def __init__(self, session: HttpSession, config: LLMConfig, provider: str) -> None:
        self._session: LeanSession | _AiohttpSession = (
            session if isinstance(session, LeanSession) else _AiohttpSession(session))
        self._provider = provider
        self._base_url = config.base_url
        self._connect_timeout = config.connect_timeout
        self._timeout = config.timeout
        self._idle_timeout = config.stream_idle_timeout

    def post_json(self, url: str, body: Mapping[str, Any],
                  headers: Mapping[str, str]) -> Awaitable[dict[str, Any]]:
        # send_json's coroutine itself: no frame of its own on every THINK's way.
        return self.send_json("POST", url, body, headers)

    async def send_json(self, method: str, url: str, body: Mapping[str, Any] | None,
                        headers: Mapping[str, str]) -> dict[str, Any]:
        """One request answered with a JSON object; ``body`` None sends none (``DELETE``)."""
        try:
            answer = await self._session.fetch(method, url, headers, _encode(body),
                                               connect_timeout=self._connect_timeout,
                                               timeout=self._timeout)
        except _FAILURES as exc:
            raise self._failure(exc, "no complete answer within the timeout") from None
        assert answer.body is not None
        if answer.status >= 300:
            raise error_from_http(answer.status, self._error_body(answer.body), answer.headers,
                                  self._provider)
        return self._decode(answer.body)

    async def post_events(self, url: str, body: Mapping[str, Any],
                          headers: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Each SSE event's JSON; ``[DONE]`` (OpenAI's end marker) stops the iteration."""
        idle = self._idle_timeout
        try:
            answer = await self._session.open("POST", url, headers, _encode(body),
                                              connect_timeout=self._connect_timeout,
                                              idle_timeout=idle)
        except _FAILURES as exc:
            raise self._failure(exc, "no answer within stream_idle_timeout") from None
        try:
            if answer.status >= 300:
                raw = await answer.read(idle)
                raise error_from_http(answer.status, self._error_body(raw), answer.headers,
                                      self._provider)
            async for data in sse_events(answer.chunks(idle)):
                if data.strip() == "[DONE]":
                    return
                yield self._decode(data.encode())
        except _FAILURES as exc:
            raise self._failure(exc, "the stream stalled (no data within "
                                "stream_idle_timeout)") from None
        finally:
            answer.release()

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            value = _loads(raw)
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
        if isinstance(exc, ConnectError):
            return self._unconnected(str(exc))
        # aiohttp's socket timeouts are both TimeoutError and connection errors: timeout wins.
        if isinstance(exc, asyncio.TimeoutError):
            return LLMError(ErrorKind.TIMEOUT, f"{self._provider}: {timeout_message}", retryable=True)
        return LLMError(ErrorKind.UNAVAILABLE, f"{self._provider}: connection failed: "
                        f"{type(exc).__name__}: {exc}", retryable=True)

    def _unconnected(self, why: str) -> ConnectFailed:
        return ConnectFailed(f"{self._provider}: cannot connect to {self._base_url} ({why}); "
                             "is the server running, and is llm.base_url right?")


_FAILURES = (TimeoutError, ConnectError, *_TRANSPORT_ERRORS)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _loads(raw: bytes) -> Any:
    """``raw``'s JSON value. msgspec reads an answer in about 60% of ujson's instructions, but
    refuses what ujson takes (NaN, a lone surrogate, 1e400): those answers are read by ujson,
    so what an answer means is what it always meant."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return ujson.loads(raw)


def _encode(body: Mapping[str, Any] | None) -> bytes | None:
    """The request body as UTF-8 JSON (msgspec: a third of ujson's instructions). A string
    UTF-8 cannot carry (a lone surrogate from an answer ujson read) goes by ujson, escaped."""
    if body is None:
        return None
    try:
        return _encoder.encode(body)
    except UnicodeEncodeError:
        return ujson.dumps(body).encode()


class _AiohttpAnswer:
    """An aiohttp response shaped like ``lean_http.Answer``."""

    def __init__(self, resp: aiohttp.ClientResponse, body: bytes | None) -> None:
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.body = body
        self._resp = resp

    def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()  # the session's sock_read is the idle timeout

    async def read(self, idle_timeout: float) -> bytes:
        return await self._resp.read()

    def release(self) -> None:
        self._resp.close()


class _AiohttpSession:
    """A caller's aiohttp session behind ``LeanSession``'s two calls, with its timeouts and its
    connect failures as ``ConnectError``."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def fetch(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                    *, connect_timeout: float, timeout: float) -> _AiohttpAnswer:
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        async with _connected(connect_timeout):
            async with self._session.request(method, url, data=body, headers=headers,
                                             timeout=limits) as resp:
                return _AiohttpAnswer(resp, await resp.read())

    async def open(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   *, connect_timeout: float, idle_timeout: float) -> _AiohttpAnswer:
        limits = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                       sock_read=idle_timeout)
        async with _connected(connect_timeout):
            resp = await self._session.request(method, url, data=body, headers=headers,
                                               timeout=limits)
        return _AiohttpAnswer(resp, None)


@asynccontextmanager
async def _connected(connect_timeout: float) -> AsyncIterator[None]:
    """aiohttp's failures to connect as ``ConnectError``."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(socket_error(exc.os_error)) from None
    except aiohttp.ConnectionTimeoutError:
        raise ConnectError(f"no connection within connect_timeout ({connect_timeout:g}s)") from None
