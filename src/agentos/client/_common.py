"""What both clients share: finding the kernel, request ids, reading replies."""
from __future__ import annotations

import functools
import inspect
import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..errors import ConnectionClosed, KernelNotRunning, RemoteProtocolError, SyscallError, TooLarge, error_from_payload
from ..protocol import DEFAULT_MAX_PAYLOAD, Flag, Op, append_frame
from ..protocol.payload import decode_json, encode_payload
from ..protocol.requests import FD_ENV, MIN_DECLARED_PAYLOAD

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
        env_fd = os.environ.pop(FD_ENV, None)
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


def reply_object(value: Any) -> dict[str, Any]:
    """A decoded JSON reply, checked to be the object every JSON syscall answers."""
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"kernel sent a reply that is not a JSON object: {value!r:.200}")
    return value


def reply_field(reply: Mapping[str, Any], key: str, kind: type[_T]) -> _T:
    """``reply[key]``, checked to be the ``kind`` the syscall's reply declares for it."""
    value = reply.get(key)
    if not isinstance(value, kind):
        raise RemoteProtocolError(f"kernel's reply has no {kind.__name__} {key!r}: {reply!r:.200}")
    return value


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


_P = ParamSpec("_P")
_S = TypeVar("_S")
_T = TypeVar("_T")
_R = TypeVar("_R")
#: Google-style docstring headings that come after ``Args:``.
_AFTER_ARGS = re.compile(r"^(Returns|Yields|Raises):", re.MULTILINE)


def takes(build: Callable[_P, _T]) -> Callable[[Callable[[_S, _T], _R]], Callable[Concatenate[_S, _P], _R]]:
    """A client method that takes ``build``'s parameters; its body gets ``build``'s result.

    A method with many options (``spawn``, ``think``) declares them once, on the request
    builder, typed and with an ``Args:`` section: the method's signature (for mypy through
    ``ParamSpec``, for ``inspect``, editors and docs/sdk.md through ``__signature__``) and the
    ``Args:`` of its docstring come from there. Spelling them out on the method too would be
    a third list of the same names, besides the builder's and the wire struct's, and lists
    that are copied drift. An unknown keyword is the ``TypeError`` Python raises for
    ``build`` (on an async client, when the call is awaited: the request is built then, as
    it always was).
    """
    parameters = list(inspect.signature(build).parameters.values())
    built = inspect.getdoc(build) or ""
    start = built.find("Args:")
    end = _AFTER_ARGS.search(built, max(start, 0))
    args = built[start:end.start() if end else None].rstrip() if start >= 0 else ""

    def decorate(method: Callable[[_S, _T], _R]) -> Callable[Concatenate[_S, _P], _R]:
        call: Any
        if inspect.iscoroutinefunction(method):
            async def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
                return await method(self, build(*args, **kwargs))
        else:
            def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
                return method(self, build(*args, **kwargs))
        functools.update_wrapper(call, method)
        own = inspect.signature(method)
        self_parameter = next(iter(own.parameters.values()))
        call.__signature__ = own.replace(parameters=[self_parameter, *parameters])
        doc = inspect.cleandoc(method.__doc__ or "")
        after = _AFTER_ARGS.search(doc)
        split = after.start() if after else len(doc)
        call.__doc__ = "\n\n".join(part for part in (doc[:split].rstrip(), args, doc[split:]) if part)
        return call  # type: ignore[no-any-return]
    return decorate


def approval_request(action: str, approval_id: str, reason: str | None) -> dict[str, Any]:
    """An APPROVALS request settling one approval (``approve`` or ``deny``)."""
    request: dict[str, Any] = {"action": action, "id": approval_id}
    if reason is not None:
        request["reason"] = reason
    return request
