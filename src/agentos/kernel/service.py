"""What a kernel subsystem (processes, THINK, state, ...) looks like to the kernel."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..protocol import Op
from .syscalls import Handler


class Service(Protocol):
    """A subsystem: its syscalls, and its lifecycle inside the kernel's event loop."""

    #: Short name, used as the key in ``Kernel.services`` and in HELLO's capabilities.
    name: str

    def syscalls(self) -> Mapping[Op, Handler]:
        """The handlers this service adds to the syscall table."""
        ...

    async def start(self) -> None:
        """Called once the loop runs, before the socket accepts clients."""
        ...

    async def stop(self) -> None:
        """Called on shutdown; must release every process, cgroup, file and task it owns."""
        ...

    def capabilities(self) -> Mapping[str, Any]:
        """What this service can do on this host, reported by HELLO."""
        ...
