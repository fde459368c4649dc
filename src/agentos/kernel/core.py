"""The core syscalls every kernel serves: HELLO (NOOP is answered inside the reactor)."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .. import __version__
from .._extensions import EXTENSIONS_LOADED
from ..protocol import VERSION, Op
from ..protocol.requests import HelloRequest, given
from .syscalls import Call, Handler

if TYPE_CHECKING:
    from .daemon import Kernel


class CoreService:
    """HELLO: who the kernel is, what it serves, and what this host can isolate."""

    name = "core"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.HELLO: self.hello}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def capabilities(self) -> Mapping[str, Any]:
        return {"extensions": dict(EXTENSIONS_LOADED)}

    async def hello(self, call: Call) -> dict[str, Any]:
        kernel = self.kernel
        ident = call.identity
        declared = given(cast(HelloRequest, call.request).max_payload)
        if declared is not None:
            kernel.set_reply_limit(call.conn, declared)
        return {
            "kernel": "agentos",
            "version": __version__,
            "protocol": VERSION,
            "pid": os.getpid(),
            "uptime": round(time.time() - kernel.started_at, 3),
            "max_payload": kernel.config.max_payload,
            "syscalls": kernel.table.names(),
            "capabilities": {name: dict(svc.capabilities())
                             for name, svc in kernel.services.items()},
            "you": {"pid": ident.pid, "uid": ident.uid, "agent_id": ident.agent_id,
                    "admin": ident.admin},
        }

