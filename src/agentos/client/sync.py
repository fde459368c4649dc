"""``Client``: the blocking SDK. One socket, buffered reads, batched writes.

Its public methods are generated into ``_sync_api.py`` from ``_async_api.py``; this
module is its transport.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import ConnectionClosed, RemoteProtocolError, SyscallError
from ..protocol import DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, append_frame
from ..protocol.payload import encode_payload
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
from ._sync_api import ClientMethods

_RECV_SIZE = 256 * 1024


class Client(ClientMethods):
    """A blocking connection to the kernel.

    With no arguments it uses the connection the kernel handed this agent
    (``AGENTOS_FD``), else ``AGENTOS_SOCKET``, else the default socket path.
    Replies are matched by request id, so an open stream (``subscribe``,
    ``think_stream``) can be read while other calls are made.
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *, fd: int | None = None,
                 timeout: float | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._decoder = FrameDecoder(max_payload)
        self._ids = RequestIds()
        self._queues: dict[int, deque[Frame]] = {}
        #: Written ahead of the first request (in the same write): the HELLO declaring our limit.
        self._unsent = bytearray()
        declare_limit(self._unsent, self._ids, self._queues, max_payload)
        self._failure: BaseException | None = None
        self._sock = connect_socket(socket_path, fd)
        self._sock.settimeout(timeout)

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def connect(cls, socket_path: str | os.PathLike[str] | None = None, *,
                fd: int | None = None, timeout: float | None = None,
                max_payload: int = DEFAULT_MAX_PAYLOAD) -> Client:
        return cls(socket_path, fd=fd, timeout=timeout, max_payload=max_payload)

    def close(self) -> None:
        self._sock.close()
        self._failure = self._failure or ConnectionClosed("client closed")

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- primitives ------------------------------------------------------------------

    def _send(self, op: int, payload: bytes) -> int:
        if self._failure is not None:
            raise connection_error(self._failure)
        rid = self._ids.take(self._queues)
        buf = self._take_unsent()
        append_frame(buf, op, rid, payload)
        self._queues[rid] = deque()
        self._write(buf)
        return rid

    def _take_unsent(self) -> bytearray:
        buf, self._unsent = self._unsent, bytearray()
        return buf

    def _write(self, data: bytes | bytearray) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            for pending in read_pending(self._sock.fileno()):
                self._route(pending)
            self._fail(exc)
            raise connection_error(self._failure) from None

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _next_frame(self, rid: int) -> Frame:
        """The next frame for request ``rid``, reading (and routing others') as needed."""
        queue = self._queues[rid]
        while not queue:
            if self._failure is not None:
                raise connection_error(self._failure)
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise
            except OSError as exc:
                self._fail(exc)
                continue
            if not data:
                self._fail(ConnectionClosed("the kernel closed the connection"))
                continue
            self._route(data)
        return queue.popleft()

    def _route(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            target = self._queues.get(frame.request_id)
            if target is not None:
                target.append(frame)
            elif frame.flags & ERROR and frame.request_id == 0:
                # A connection-level error (protocol_error, busy): the kernel is about to hang up.
                try:
                    raise_error(frame.payload)
                except (RemoteProtocolError, SyscallError) as exc:
                    self._fail(exc)
                except Exception as exc:
                    self._fail(RemoteProtocolError(str(exc)))

    def _request(self, op: int, payload: bytes) -> memoryview:
        rid = self._send(op, payload)
        try:
            frame = self._next_frame(rid)
        finally:
            del self._queues[rid]
        if frame.flags & ERROR:
            raise_error(frame.payload)
        return frame.payload

    def _requests(self, op: int, payloads: list[bytes]) -> list[memoryview]:
        if self._failure is not None:
            raise connection_error(self._failure)
        buf = self._take_unsent()
        rids = []
        for payload in payloads:
            rid = self._ids.take(self._queues)
            self._queues[rid] = deque()
            append_frame(buf, op, rid, payload)
            rids.append(rid)
        try:
            self._write(buf)
            replies = []
            for rid in rids:
                frame = self._next_frame(rid)
                if frame.flags & ERROR:
                    raise_error(frame.payload)
                replies.append(frame.payload)
            return replies
        finally:
            for rid in rids:
                self._queues.pop(rid, None)

    def _stream(self, op: int, args: Any = None, *, raw: bool = False) -> Iterator[Any]:
        rid = self._send(op, encode_payload(self._traced(args)))
        try:
            while True:
                last, value = stream_item(self._next_frame(rid), raw)
                if not last or value is not None:
                    yield value
                if last:
                    return
        finally:
            del self._queues[rid]
