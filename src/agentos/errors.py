"""The exception hierarchy shared by the kernel and the SDK.

A kernel handler raises one of these; the client raises the same class when the
ERROR frame arrives, so ``except agentos.NotFound`` works on both sides.
"""
from __future__ import annotations

import enum
from typing import Any, ClassVar


class ErrorCode(str, enum.Enum):
    """Stable error codes carried in ERROR frames as ``{"code", "message"}``."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    TOO_LARGE = "too_large"
    NOT_IMPLEMENTED = "not_implemented"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL = "internal"


class AgentOSError(Exception):
    """Base of every agentos error."""


class ProtocolError(AgentOSError):
    """Bytes on the wire that do not form a valid frame."""

    code: ClassVar[ErrorCode] = ErrorCode.PROTOCOL_ERROR
    #: Valid frames decoded, in the same chunk, before the bad header.
    frames: list[Any] = []


class BadMagic(ProtocolError):
    """The frame does not start with the agentos magic."""


class UnsupportedVersion(ProtocolError):
    """The frame's protocol version is not one this peer speaks."""


class FrameTooLarge(ProtocolError):
    """The header announces a payload over the configured maximum."""


class BadFrame(ProtocolError):
    """A header field is invalid (unknown flags, non-zero reserved bits)."""


class ConnectionClosed(AgentOSError):
    """The connection to the kernel closed while a request was outstanding."""


class KernelNotRunning(AgentOSError):
    """No kernel listens at the socket path."""


class SyscallError(AgentOSError):
    """A syscall answered with an ERROR frame: a stable ``code`` and a message."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details:
            payload["details"] = self.details
        return payload


class InvalidArgument(SyscallError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(SyscallError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(SyscallError):
    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(SyscallError):
    code = ErrorCode.PERMISSION_DENIED


class TooLarge(SyscallError):
    code = ErrorCode.TOO_LARGE


class NotImplementedSyscall(SyscallError):
    code = ErrorCode.NOT_IMPLEMENTED


class Busy(SyscallError):
    code = ErrorCode.BUSY


class Unavailable(SyscallError):
    code = ErrorCode.UNAVAILABLE


class Timeout(SyscallError):
    code = ErrorCode.TIMEOUT


class RemoteProtocolError(SyscallError):
    """The kernel rejected our bytes as malformed (it closes the connection)."""

    code = ErrorCode.PROTOCOL_ERROR


class InternalError(SyscallError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[str, type[SyscallError]] = {
    cls.code.value: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, PermissionDenied, TooLarge,
                NotImplementedSyscall, Busy, Unavailable, Timeout, RemoteProtocolError,
                InternalError)
}


def error_from_payload(payload: dict[str, Any]) -> SyscallError:
    """Rebuild the typed exception an ERROR frame describes; unknown codes map to InternalError."""
    code = str(payload.get("code", ErrorCode.INTERNAL.value))
    message = str(payload.get("message", "unknown error"))
    details = payload.get("details") or {}
    cls = _BY_CODE.get(code, InternalError)
    err = cls(message, **(details if isinstance(details, dict) else {"details": details}))
    return err
