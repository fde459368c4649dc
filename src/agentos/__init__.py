"""agentos: a Linux kernel for LLM agents.

Agents are ordinary processes that talk to the ``agentos kernel`` daemon over a
Unix socket. ``Client`` (blocking) and ``AsyncClient`` (asyncio) are the SDK.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .client import AsyncClient, Client  # noqa: E402
from .errors import (  # noqa: E402
    AgentOSError,
    AlreadyExists,
    Busy,
    ConnectionClosed,
    InternalError,
    InvalidArgument,
    KernelNotRunning,
    NotFound,
    NotImplementedSyscall,
    PermissionDenied,
    ProtocolError,
    SyscallError,
    Timeout,
    TooLarge,
    Unavailable,
)

__all__ = ["__version__", "Client", "AsyncClient", "AgentOSError", "SyscallError",
           "ProtocolError", "ConnectionClosed", "KernelNotRunning", "InvalidArgument", "NotFound",
           "AlreadyExists", "PermissionDenied", "TooLarge", "NotImplementedSyscall", "Busy",
           "Unavailable", "Timeout", "InternalError"]
