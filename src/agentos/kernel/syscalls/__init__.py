"""The syscall table: opcode -> handler, and the ``Call`` a handler receives.

A handler is ``async def handler(call: Call) -> result``. The result becomes the
reply payload: ``bytes`` are sent raw, ``None`` as an empty payload, anything else
as JSON. A handler that calls ``await call.stream(chunk)`` (or ``call.open_stream()``) turns its
reply into a stream: each chunk is a STREAM frame and the result becomes the END frame.
Raising a ``agentos.errors.SyscallError`` subclass sends an ERROR frame with its
code; any other exception is logged and answered as ``internal``.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...protocol import Op, op_name
from ...protocol.requests import Request, decode_object, decode_request

if TYPE_CHECKING:
    from ..daemon import Kernel
    from ..identity import Identity

Handler = Callable[["Call"], Awaitable[Any]]


class Call:
    """One syscall in progress: who asked, what, and how to stream back."""

    __slots__ = ("kernel", "conn", "op", "request_id", "payload", "streamed", "request", "_args")

    def __init__(self, kernel: Kernel, conn: Any, op: int, request_id: int, payload: bytes) -> None:
        self.kernel = kernel
        self.conn = conn
        self.op = op
        self.request_id = request_id
        self.payload = payload
        self.streamed = False
        #: The payload decoded as the opcode's declared request (``decode``), if it declares one.
        self.request: Request | None = None
        self._args: dict[str, Any] | None = None

    def decode(self) -> None:
        """Decode the payload as the opcode's declared request (InvalidArgument if it is not one).

        The dispatcher calls this before any guard or handler runs, once per call.
        """
        self.request = decode_request(self.op, self.payload)

    @property
    def identity(self) -> Identity:
        """Who is calling (set when the connection was accepted or adopted)."""
        return self.conn.context

    def args(self) -> dict[str, Any]:
        """The payload as a mapping: the declared request's fields, or strict JSON for an
        opcode that declares none; an empty payload is ``{}``. Parsed once, then cached."""
        if self._args is None:
            self._args = (self.request.fields() if self.request is not None
                          else decode_object(self.op, self.payload))
        return self._args

    def open_stream(self) -> None:
        """Answer as a stream even if no chunk follows: the result goes out as STREAM|END.

        A request the client asked to stream must end with END (or ERROR) whatever it found,
        so a handler calls this as soon as it knows it streams, before any early return.
        """
        self.streamed = True

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
            raise ValueError(f"syscall {op_name(op)} is already registered")
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
