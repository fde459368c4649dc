"""The providers' HTTP/1.1 client: keep-alive connections on asyncio protocols, answers parsed
by ``httptools`` (llhttp, the parser uvicorn uses).

Why not aiohttp here: a THINK through aiohttp's ``ClientSession`` cost the kernel about 150 us
of CPU in the client alone (request and response objects, tracing hooks, cookie handling,
timers, multidicts), half of what the kernel adds to a call. This client does only what the
model APIs need: a request head built once per URL and header set, one ``write`` per request,
the answer's bytes fed straight to the C parser.

What it does, like the aiohttp session it replaced (``http.py`` documents the differences):

- ``http`` and ``https`` (``ssl.create_default_context()``: the system CAs, or ``SSL_CERT_FILE``
  / ``SSL_CERT_DIR``; SNI and hostname checks; ALPN ``http/1.1``). Proxies are not used (the
  aiohttp session did not read ``HTTP(S)_PROXY`` either).
- Content-Length, chunked and read-until-close bodies; ``gzip`` and ``deflate`` answers.
- A pool of idle keep-alive connections per (scheme, host, port); a connection goes back only
  after its answer was read whole and the server keeps it open, and is closed after
  ``KEEPALIVE`` seconds idle.
- Streams hand over body chunks as they come; past ``HIGH_WATER`` unread bytes the socket is
  not read until the consumer is down to ``LOW_WATER``.
- A request on a reused connection that the server had closed is sent again, once, on a new
  connection (``_Stale`` says exactly when).
"""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from .deadline import Alarms

#: The status line and headers of one answer, at most (aiohttp allowed 128 lines of 8190 bytes;
#: model APIs send a few hundred bytes).
MAX_HEAD = 64 * 1024
#: A stream's unread bytes above which the socket is not read (the consumer lags) ...
HIGH_WATER = 256 * 1024
#: ... until the consumer is down to this.
LOW_WATER = 64 * 1024
#: Seconds an idle pooled connection is kept (aiohttp's keepalive_timeout was 30 s too).
KEEPALIVE = 30.0
#: What answers may be compressed with: both are zlib, which the standard library has.
ACCEPT_ENCODING = "gzip, deflate"
#: Delay before trying a host's next address while one still connects (RFC 8305; aiohttp's value).
HAPPY_EYEBALLS_DELAY = 0.25

Origin = tuple[str, str, int]
#: Lengths of the header names that frame or encode a body (checked before lower-casing a name).
_FRAMING_LENGTHS = frozenset({len(b"content-length"), len(b"transfer-encoding"),
                              len(b"content-encoding")})


class ConnectError(Exception):
    """No connection could be made (refused, DNS, unreachable, TLS refused, connect timeout);
    nothing was sent. ``str()`` says why."""


class ServerDisconnected(ConnectionError):
    """The connection ended before the answer was whole."""


class BadAnswer(ConnectionError):
    """The bytes that came back are not an HTTP/1.1 answer this client takes."""


class _Stale(Exception):
    """A connection taken from the pool ended (EOF, reset or broken pipe) before a single byte
    of the answer: a server closes an idle keep-alive connection between requests, and a request
    that races that close arrives at a socket nobody reads any more. It is sent again, once, on a
    new connection. A server that did read it and then hung up without a byte of answer cannot be
    told apart; the THINK retry policy would send that request again too (``unavailable`` is
    retryable), so the early retry adds no duplicate the layer above would not make. A new
    connection ending so is never retried here."""


class Answer:
    """One answer: status, headers and, unless streamed, its whole body."""

    __slots__ = ("status", "raw_headers", "body", "_conn")

    def __init__(self, conn: _Connection, body: bytes | None) -> None:
        self.status = conn.status
        self.raw_headers = conn.headers
        self.body = body
        self._conn = conn

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; a repeated header keeps its last value."""
        return {name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self.raw_headers}

    def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """A streamed body as it arrives (decoded); TimeoutError when nothing came for
        ``idle_timeout``."""
        return self._conn.chunks(idle_timeout)

    async def read(self, idle_timeout: float) -> bytes:
        """The rest of a streamed body."""
        return b"".join([chunk async for chunk in self.chunks(idle_timeout)])

    def release(self) -> None:
        """The caller is done with a streamed answer: its connection goes back to the pool if
        the body was read whole and the server keeps it open, else it is closed (a call given up
        or cancelled half-way hangs up at once)."""
        self._conn.done()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, session: LeanSession, origin: Origin) -> None:
        self.session = session
        self.origin = origin
        self.loop = session.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.alive = True
        self.busy = False
        self.streamed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._start_answer()

    def _start_answer(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.received = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.paused = False
        self._head_size = 0
        self._framed = False  # Content-Length or chunked: the parser finds the body's end
        self._decoder: Any = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ if isinstance(exc.__context__, BadAnswer)
                       else BadAnswer(f"malformed HTTP answer: {exc.__context__ or exc}"))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(BadAnswer(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        if self.head_done and not self.complete and not self._framed:
            self.on_message_complete()  # the body ran until the server closed the connection
            self.keep_alive = False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.session._forget(self)
        if self.busy and not self.complete and self.error is None:
            if self.reused and not self.received and (
                    exc is None or isinstance(exc, (ConnectionResetError, BrokenPipeError))):
                self._fail(_Stale())
            else:
                why = f": {exc}" if exc else ""
                self._fail(ServerDisconnected(
                    f"the server closed the connection before the answer was complete{why}"))

    def pause_writing(self) -> None:
        pass  # a request is one write; the transport buffers what the socket does not take

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks ----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._head_size += len(status) + 13

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise BadAnswer(f"the answer's status line and headers exceed {MAX_HEAD // 1024} KiB")
        self.headers.append((name, value))
        if len(name) in _FRAMING_LENGTHS:
            self._framing(name.lower(), value)

    def _framing(self, name: bytes, value: bytes) -> None:
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True
        elif name == b"content-encoding":
            self._decoder = _decoder(value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            # An interim answer (103 Early Hints...): the real one follows on the same connection.
            self.headers = []
            self._framed = False
            self._decoder = None
            return
        self.status = status
        self.head_done = True
        if self.streamed:
            # Only a stream's reader waits for the head; a whole answer's would wake for nothing
            # when the body comes in a later segment.
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                raise BadAnswer(f"the compressed body is corrupt: {exc}") from None
        if body:
            self.body.append(body)
            if self.streamed:  # a whole answer's reader waits for the end only
                self.buffered += len(body)
                if self.buffered > HIGH_WATER and not self.paused:
                    assert self.transport is not None
                    self.paused = True
                    self.transport.pause_reading()
                self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # --- one exchange -----------------------------------------------------------------------

    def send(self, payload: bytes, streamed: bool) -> None:
        self._start_answer()
        self.streamed = streamed  # only a stream's reader drains the body as it comes
        self.busy = True
        assert self.transport is not None
        self.transport.write(payload)

    async def head(self) -> None:
        """Wait until the answer's head has arrived."""
        while not self.head_done:
            await self._wait()

    async def whole(self) -> bytes:
        """Wait for the whole answer; its body."""
        while not self.complete:
            await self._wait()
        body = b"".join(self.body)
        self.body.clear()
        return body

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        body = self.body
        while True:
            while body:
                chunk = body.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= LOW_WATER and self.alive:
                    self.paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            alarms = self.session.alarms
            alarm = alarms.at(self.loop.time() + idle_timeout, self.expire)
            try:
                await self._wait()
            finally:
                alarms.cancel(alarm)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self.loop.create_future()
        await waiter
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def expire(self) -> None:
        """A timeout passed: the connection cannot be reused, the waiting request gets
        TimeoutError."""
        self._fail(TimeoutError())

    def done(self) -> None:
        """The caller is finished with the answer: the connection goes back to the pool if the
        answer was read whole and the server keeps it open, else it is closed."""
        self.busy = False
        if self.complete and self.keep_alive and self.alive and self.error is None:
            self.session._release(self)
        else:
            self.close()

    def close(self) -> None:
        """Close at once (no TLS close_notify: a killed call's connection must go now)."""
        self.alive = False
        if self.transport is not None:
            self.transport.abort()


def _decoder(encoding: bytes) -> Any:
    name = encoding.strip().lower()
    if name == b"gzip" or name == b"x-gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == b"deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    if name in (b"", b"identity"):
        return None
    raise BadAnswer(f"the answer's Content-Encoding {encoding.decode('latin-1')!r} was not asked for")


class LeanSession:
    """The kernel's connections to the model API, shared by every provider call."""

    def __init__(self, max_idle: int = 32) -> None:
        self.loop = asyncio.get_running_loop()
        #: Every exchange's timeout and every stream's idle timeout.
        self.alarms = Alarms(self.loop)
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._routes: dict[tuple[Any, ...], tuple[Origin, bytes]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def __aenter__(self) -> LeanSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, idle or not."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """What aiohttp verified with: the default context, read when first needed."""
        if self._ssl is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    def fetch(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
              *, connect_timeout: float, timeout: float) -> Coroutine[Any, Any, Answer]:
        """One request and its whole answer, all within ``timeout`` (connecting within
        ``connect_timeout`` of that); TimeoutError past it."""
        # The exchange's coroutine itself: no frame of its own on every THINK's way.
        return self._exchange(method, url, headers, body, connect_timeout, timeout, True)

    async def open(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   *, connect_timeout: float, idle_timeout: float) -> Answer:
        """One request; its answer once the head has arrived (within ``idle_timeout`` of
        sending). The caller reads ``chunks()`` and must call ``release()`` in every case."""
        return await self._exchange(method, url, headers, body, connect_timeout, idle_timeout,
                                    False)

    async def _exchange(self, method: str, url: str, headers: Mapping[str, str],
                        body: bytes | None, connect_timeout: float, timeout: float,
                        whole: bool) -> Answer:
        origin, head = self._route(method, url, headers)
        payload = head + (b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
                          if body is not None else b"\r\n")
        # The loop's clock (asyncio's is time.monotonic), read without loop.time()'s frame.
        deadline = time.monotonic() + timeout
        conn = self._take(origin)
        if conn is not None:
            try:
                return await self._send(conn, payload, deadline, whole)
            except _Stale:
                pass
        conn = await self._connect(origin, min(connect_timeout, deadline - time.monotonic()))
        return await self._send(conn, payload, deadline, whole)

    async def _send(self, conn: _Connection, payload: bytes, deadline: float,
                    whole: bool) -> Answer:
        alarms = self.alarms
        alarm = alarms.at(deadline, conn.expire)
        try:
            conn.send(payload, not whole)
            if whole:
                answer = Answer(conn, await conn.whole())
                conn.done()
                return answer
            await conn.head()
            return Answer(conn, None)
        except BaseException:
            conn.close()  # cancelled (a killed agent), timed out or broken: hang up now
            raise
        finally:
            alarms.cancel(alarm)

    # --- the pool ---------------------------------------------------------------------------

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closed by now
            if conn.alive:
                conn.reused = True
                return conn
        return None

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if self.closed or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(KEEPALIVE, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        oldest = time.monotonic() - KEEPALIVE
        for idle in self._idle.values():
            for conn in [c for c in idle if c.idle_since <= oldest]:
                idle.remove(conn)
                conn.close()
        if any(self._idle.values()):
            self._sweeper = self.loop.call_later(KEEPALIVE, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        if self.closed:
            raise ConnectError("the session is closed")
        scheme, host, port = origin
        conn = _Connection(self, origin)
        secure = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(
                    lambda: conn, host, port, ssl=self.ssl_context if secure else None,
                    server_hostname=host if secure else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
        except TimeoutError:
            conn.close()
            raise ConnectError(f"no connection within connect_timeout ({timeout:g}s)") from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            conn.close()
            raise ConnectError(socket_error(exc)) from None
        self._open.add(conn)
        return conn

    def _route(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[Origin, bytes]:
        key = (method, url, *headers.items())
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= 1024:
                self._routes.clear()  # URLs name models: a handful in practice
            route = self._routes[key] = _build_route(method, url, headers)
        return route


def _build_route(method: str, url: str, headers: Mapping[str, str]) -> tuple[Origin, bytes]:
    """The connection key and the request head up to (not including) Content-Length."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"not an http(s) URL: {url!r}")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    given = {name.lower() for name in headers}
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    defaults = {"user-agent": "agentos-llm", "accept": "*/*", "accept-encoding": ACCEPT_ENCODING}
    if parts.username is not None:
        userinfo = f"{parts.username}:{parts.password or ''}".encode()
        defaults["authorization"] = "Basic " + base64.b64encode(userinfo).decode("ascii")
    lines += [f"{name.title()}: {value}" for name, value in defaults.items() if name not in given]
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name or not name:
            raise ValueError(f"header {name!r} has a forbidden character")
        lines.append(f"{name}: {value}")
    return (scheme, host, port), ("\r\n".join(lines) + "\r\n").encode("utf-8")


def socket_error(error: OSError) -> str:
    """asyncio words every failed connect "Connect call failed (...)": the errno says why."""
    if error.errno and not isinstance(error, (ssl.SSLError, socket.gaierror)):
        return os.strerror(error.errno).lower()  # connection refused, no route to host ...
    return str(error.strerror or error)
