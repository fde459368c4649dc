"""A kernel with config sections (as tests/permissions/configured_kernel.py) and one test
syscall, ADOPT (0xF0), that makes agent connections the way SPAWN does.

``ADOPT {"agent_id", "count", "to"}`` creates ``count`` socketpairs, has the kernel
adopt one end of each as a connection of ``agent_id`` (``Kernel.adopt``, SPAWN's
path) and passes the other ends, with SCM_RIGHTS, to the Unix socket at ``to``.
The test then speaks to the kernel on them as that agent would.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[2]))

from agentos.kernel import daemon  # noqa: E402
from agentos.kernel.identity import Identity  # noqa: E402
from tests.permissions.configured_kernel import main  # noqa: E402

ADOPT = 0xF0


class AdoptService:
    name = "adopt"

    def __init__(self, kernel: daemon.Kernel) -> None:
        self.kernel = kernel

    def syscalls(self) -> dict[int, Any]:
        return {ADOPT: self.adopt}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def capabilities(self) -> dict[str, Any]:
        return {}

    async def adopt(self, call: Any) -> dict[str, int]:
        args = call.args()
        identity = Identity(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), agent_id=args["agent_id"])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as out:
            out.connect(args["to"])
            for _ in range(args["count"]):
                ours, theirs = socket.socketpair()
                with theirs:
                    self.kernel.adopt(ours.detach(), identity)
                    socket.send_fds(out, [b"c"], [theirs.fileno()])
        return {"adopted": args["count"]}


_build = daemon.build_services


def build_services(kernel: daemon.Kernel) -> list[Any]:
    return [*_build(kernel), AdoptService(kernel)]


daemon.build_services = build_services

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
