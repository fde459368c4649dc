"""The syscall table: opcode -> handler, and the ``Call`` a handler receives.

A handler is ``async def handler(call: Call) -> result``. The result becomes the
reply payload: ``bytes`` are sent raw, ``None`` as an empty payload, anything else
as JSON. A handler that calls ``await call.stream(chunk)`` turns its reply into a
stream: each chunk is a STREAM frame and the result becomes the END frame.
Raising a ``agentos.errors.SyscallError`` subclass sends an ERROR frame with its
code; any other exception is logged and answered as ``internal``.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import ujson

from ...errors import InvalidArgument
from ...protocol import Op

if TYPE_CHECKING:
    from ..daemon import Kernel
    from ..identity import Identity

Handler = Callable[["Call"], Awaitable[Any]]


class Call:
    """One syscall in progress: who asked, what, and how to stream back."""

    __slots__ = ("kernel", "conn", "op", "request_id", "payload", "streamed")

    def __init__(self, kernel: Kernel, conn: Any, op: int, request_id: int, payload: bytes) -> None:
        self.kernel = kernel
        self.conn = conn
        self.op = op
        self.request_id = request_id
        self.payload = payload
        self.streamed = False

    @property
    def identity(self) -> Identity:
        """Who is calling (set when the connection was accepted or adopted)."""
        return self.conn.context

    def args(self) -> dict[str, Any]:
        """The payload as a JSON object; an empty payload is ``{}``."""
        if not self.payload:
            return {}
        try:
            value = ujson.loads(self.payload)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"payload is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidArgument(f"payload must be a JSON object, got {type(value).__name__}")
        return value

    async def stream(self, chunk: Any) -> None:
        """Send one STREAM frame; waits while the client is not reading (backpressure)."""
        self.streamed = True
        await self.kernel.send_stream_chunk(self, chunk)


class SyscallTable:
    """Opcode -> handler. Areas add their handlers; the reactor never changes."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}

    def add(self, op: Op, handler: Handler) -> None:
        if int(op) in self._handlers:
            raise ValueError(f"syscall {Op(op).name} is already registered")
        self._handlers[int(op)] = handler

    def add_all(self, handlers: Mapping[Op, Handler]) -> None:
        for op, handler in handlers.items():
            self.add(op, handler)

    def get(self, op: int) -> Handler | None:
        return self._handlers.get(op)

    def names(self) -> list[str]:
        """Names of every syscall this kernel serves, NOOP included."""
        ops = {int(Op.NOOP), *self._handlers}
        return sorted(Op(op).name for op in ops if op in Op._value2member_map_)
