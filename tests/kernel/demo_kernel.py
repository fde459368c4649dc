"""A real kernel with one extra test service on private opcodes 0xF0-0xF4.

Run as ``python demo_kernel.py --socket ... --state-dir ...``; the tests use it
to drive what the core syscalls alone cannot: slow replies, streams, handler
failures and cancellation.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agentos.cli.main import main
from agentos.errors import NotFound
from agentos.kernel import daemon

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


_build = daemon.build_services


def build_services(kernel):
    return [*_build(kernel), DemoService(kernel)]


daemon.build_services = build_services

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(["kernel", *sys.argv[1:]]))
