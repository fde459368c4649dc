"""What both clients share: finding the kernel, request ids, reading replies."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


from ..errors import (ConnectionClosed, KernelNotRunning, RemoteProtocolError, SyscallError,
                      TooLarge, error_from_payload)
from ..protocol import DEFAULT_MAX_PAYLOAD, Flag, Op, append_frame
from ..protocol.payload import decode_json, encode_payload
from ..protocol.requests import MIN_DECLARED_PAYLOAD

REPLY = int(Flag.REPLY)
ERROR = int(Flag.ERROR)
STREAM = int(Flag.STREAM)
END = int(Flag.END)
_U32 = 1 << 32


def connect_socket(socket_path: str | os.PathLike[str] | None, fd: int | None) -> socket.socket:
    """The kernel connection: ``fd``, else ``AGENTOS_FD``, else a path (arg, ``AGENTOS_SOCKET``, default).

    An inherited fd (how the kernel hands agents their connection) is used once:
    the variable is removed so a child of the agent does not share the socket.
    """
    if fd is None and socket_path is None:
        env_fd = os.environ.pop("AGENTOS_FD", None)
        if env_fd is not None:
            fd = int(env_fd)
    if fd is not None:
        return socket.socket(fileno=fd)
    from ..kernel.config import default_socket_path

    path = Path(socket_path) if socket_path is not None else default_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise KernelNotRunning(f"no agentos kernel at {path} ({exc.strerror}); start one with "
                               "`agentos kernel` or set AGENTOS_SOCKET") from None
    except BaseException:
        sock.close()
        raise
    return sock


class RequestIds:
    """u32 request ids, wrapping, never handing out one still in use."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def take(self, in_use: Any) -> int:
        while True:
            self._next = (self._next + 1) % _U32
            if self._next not in in_use:
                return self._next


def declare_limit(buf: bytearray, ids: RequestIds, in_use: Any, max_payload: int) -> None:
    """Append the HELLO that tells the kernel the largest payload this client accepts.

    Only a limit other than the protocol's default (which the kernel assumes) is declared.
    It goes out ahead of the first request and nobody waits for its reply (which has no
    waiter, so it is dropped). The kernel's HELLO handler never waits, so the limit holds
    for every request sent after it: a longer reply is refused with ``too_large`` for that
    request, instead of a frame this client's decoder would reject, failing the connection.
    """
    if max_payload == DEFAULT_MAX_PAYLOAD:
        return
    if max_payload < MIN_DECLARED_PAYLOAD:
        raise ValueError(f"max_payload must be at least {MIN_DECLARED_PAYLOAD} bytes "
                         "(every error frame must fit)")
    limit = min(max_payload, _U32 - 1)  # no frame can be longer
    append_frame(buf, Op.HELLO, ids.take(in_use), encode_payload({"max_payload": limit}))


def check_echo(payload: bytes | bytearray | memoryview, limit: int) -> None:
    """Refuse (``too_large``, nothing sent) a NOOP whose echo this client would refuse.

    The kernel echoes a NOOP as it came, unchecked. A longer echo than this client accepts
    would be a frame its decoder refuses from the header alone and cannot skip without
    reading it all, which fails the connection; so the SDK never asks for one.
    """
    size = memoryview(payload).nbytes
    if size > limit:
        raise TooLarge(f"NOOP payload of {size} bytes: its echo would be over this client's "
                       f"max_payload of {limit} bytes", size=size, limit=limit)


def raise_error(payload: bytes | memoryview) -> None:
    """Raise the typed exception an ERROR frame carries."""
    try:
        body = decode_json(payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"kernel sent an unreadable error: {bytes(payload)[:200]!r}")
    raise error_from_payload(body)


def connection_error(exc: BaseException | None) -> SyscallError | ConnectionClosed:
    if isinstance(exc, (SyscallError, ConnectionClosed)):
        return exc
    return ConnectionClosed(f"connection to the kernel closed{f': {exc}' if exc else ''}")


def stream_item(frame: Any, raw: bool = False) -> tuple[bool, Any]:
    """One frame of a streamed reply: ``(is_last, value)``; an ERROR frame raises.

    The END frame's payload (or a plain REPLY's) is the last value; an empty one is
    ``None`` and is not yielded. With ``raw`` a STREAM chunk is its bytes, not JSON.
    """
    if frame.flags & ERROR:
        raise_error(frame.payload)
    last = bool(frame.flags & END or not frame.flags & STREAM)
    return last, bytes(frame.payload) if raw and not last else decode_json(frame.payload)


def read_pending(fd: int) -> list[bytes]:
    """What socket ``fd`` has already received, read without waiting (after a failed write,
    the kernel's last frame, saying why it hung up, is usually there)."""
    chunks: list[bytes] = []
    if fd < 0:
        return chunks
    sock = socket.socket(fileno=fd)
    try:
        while data := sock.recv(1 << 16, socket.MSG_DONTWAIT):
            chunks.append(data)
    except OSError:
        pass
    finally:
        sock.detach()
    return chunks
