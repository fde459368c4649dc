"""A real kernel with one extra test service on private opcodes 0xF0-0xF4.

Run as ``python demo_kernel.py --socket ... --state-dir ...``; the tests use it
to drive what the core syscalls alone cannot: slow replies, streams, handler
failures and cancellation. The service is added as any program adds one, with
``Kernel(extra_services=...)`` (here through ``agentos kernel``'s own options and guardian).
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agentos.cli.commands import kernel as kernel_command
from agentos.cli.main import build_parser
from agentos.errors import NotFound
from agentos.kernel.daemon import ServiceFactory

SLEEP, STREAM, FAIL, RAISE_NOT_FOUND, CANCEL_LOG = 0xF0, 0xF1, 0xF2, 0xF3, 0xF4


class DemoService:
    name = "demo"

    def __init__(self, kernel):
        self.kernel = kernel
        self.cancelled: list[str] = []

    def syscalls(self):
        return {SLEEP: self.sleep, STREAM: self.stream, FAIL: self.fail,
                RAISE_NOT_FOUND: self.not_found, CANCEL_LOG: self.cancel_log}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def capabilities(self):
        return {"demo": True}

    async def sleep(self, call):
        args = call.args()
        try:
            await asyncio.sleep(args["seconds"])
        except asyncio.CancelledError:
            self.cancelled.append(args.get("tag", ""))
            raise
        return {"slept": args["seconds"], "tag": args.get("tag")}

    async def stream(self, call):
        args = call.args()
        for i in range(args["count"]):
            await call.stream({"i": i, "pad": "x" * args.get("pad", 0)})
        return {"done": args["count"]}

    async def fail(self, call):
        raise RuntimeError("deliberate handler bug")

    async def not_found(self, call):
        raise NotFound("no such thing", name="thing")

    async def cancel_log(self, call):
        return {"cancelled": self.cancelled}


def serve(argv: list[str], services: list[ServiceFactory]) -> int:
    """``agentos kernel ARGV`` with ``services`` added to the kernel's own."""
    return kernel_command.run(build_parser().parse_args(["kernel", *argv]), extra_services=services)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(serve(sys.argv[1:], [DemoService]))
