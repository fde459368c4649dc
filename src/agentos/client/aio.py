"""``AsyncClient``: the asyncio SDK. Many requests in flight on one connection.

Its public methods are in ``_async_api.py``; this module is its transport.
"""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConnectionClosed, RemoteProtocolError, SyscallError
from ..protocol import DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, append_frame
from ..protocol.payload import encode_payload
from ._async_api import AsyncClientMethods
from ._common import (
    ERROR,
    RequestIds,
    connect_socket,
    connection_error,
    declare_limit,
    raise_error,
    read_pending,
    stream_item,
)


class _Protocol(asyncio.Protocol):
    """Routes incoming frames to the future or stream queue of their request id."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._fd = transport.get_extra_info("socket").fileno()

    def data_received(self, data: bytes) -> None:
        client = self.client
        try:
            frames = client._decoder.feed(data)
        except Exception as exc:
            client._fail(exc)
            return
        for frame in frames:
            client._route(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            # A failed write closes the transport before it reads what the kernel sent last:
            # usually the frame that says why it hung up (busy, protocol_error). The socket
            # is still open here; take what it holds without waiting.
            for data in read_pending(self._fd):
                self.data_received(data)
        self.client._fail(exc or ConnectionClosed("the kernel closed the connection"))


class AsyncClient(AsyncClientMethods):
    """An asyncio connection to the kernel; create it with ``await AsyncClient.connect()``.

    Requests are written in batches (one write per loop iteration however many
    coroutines call at once) and replies are matched by request id.
    """

    def __init__(self, *, timeout: float | None = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._timeout = timeout
        self._decoder = FrameDecoder(max_payload)
        self._ids = RequestIds()
        self._waiters: dict[int, asyncio.Future[Frame] | asyncio.Queue[Frame]] = {}
        self._out = bytearray()
        # Flushed with the first request: the HELLO declaring our limit.
        declare_limit(self._out, self._ids, self._waiters, max_payload)
        self._flush_scheduled = False
        self._failure: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def connect(cls, socket_path: str | os.PathLike[str] | None = None, *,
                      fd: int | None = None, timeout: float | None = None,
                      max_payload: int = DEFAULT_MAX_PAYLOAD) -> AsyncClient:
        self = cls(timeout=timeout, max_payload=max_payload)
        sock = connect_socket(socket_path, fd)
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_unix_connection(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        return self

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionClosed("client closed"))

    def fileno(self) -> int:
        if self._transport is None or self._transport.is_closing():
            return -1
        sock: socket.socket = self._transport.get_extra_info("socket")
        return sock.fileno()

    # -- plumbing --------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        err = connection_error(self._failure)
        for waiter in self._waiters.values():
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(err)  # type: ignore[arg-type]
            elif not waiter.done():
                waiter.set_exception(err)
        self._waiters.clear()

    def _route(self, frame: Frame) -> None:
        waiter = self._waiters.get(frame.request_id)
        if waiter is None:
            if frame.flags & ERROR and frame.request_id == 0:
                try:
                    raise_error(frame.payload)
                except Exception as exc:
                    # A connection-level error (protocol_error, busy) keeps its type.
                    self._fail(exc if isinstance(exc, (RemoteProtocolError, SyscallError))
                               else RemoteProtocolError(str(exc)))
            return
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(frame)
        else:
            del self._waiters[frame.request_id]
            if not waiter.done():
                waiter.set_result(frame)

    def _send(self, op: int, payload: bytes, waiter: asyncio.Future[Frame] | asyncio.Queue[Frame]) -> int:
        if self._failure is not None:
            raise connection_error(self._failure)
        rid = self._ids.take(self._waiters)
        self._waiters[rid] = waiter
        append_frame(self._out, op, rid, payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        return rid

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and self._failure is None:
            self._transport.write(bytes(self._out))
        self._out.clear()

    async def _reply(self, fut: asyncio.Future[Frame]) -> memoryview:
        frame = await (fut if self._timeout is None else asyncio.wait_for(fut, self._timeout))
        if frame.flags & ERROR:
            raise_error(frame.payload)
        return frame.payload

    async def _request(self, op: int, payload: bytes) -> memoryview:
        assert self._loop is not None
        fut: asyncio.Future[Frame] = self._loop.create_future()
        rid = self._send(op, payload, fut)
        try:
            return await self._reply(fut)
        finally:
            self._waiters.pop(rid, None)

    async def _requests(self, op: int, payloads: list[bytes]) -> list[memoryview]:
        assert self._loop is not None
        futs: list[asyncio.Future[Frame]] = [self._loop.create_future() for _ in payloads]
        rids = [self._send(op, payload, fut) for payload, fut in zip(payloads, futs)]
        try:
            return [await self._reply(fut) for fut in futs]
        finally:
            for rid, fut in zip(rids, futs):
                self._waiters.pop(rid, None)
                if fut.done() and not fut.cancelled():
                    fut.exception()  # one failure is raised; the others are not logged as lost

    async def _stream(self, op: int, args: Any = None, *, raw: bool = False) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Frame] = asyncio.Queue()
        rid = self._send(op, encode_payload(self._traced(args)), queue)
        try:
            while True:
                frame = await (queue.get() if self._timeout is None
                               else asyncio.wait_for(queue.get(), self._timeout))
                if isinstance(frame, BaseException):
                    raise frame
                last, value = stream_item(frame, raw)
                if not last or value is not None:
                    yield value
                if last:
                    return
        finally:
            self._waiters.pop(rid, None)
