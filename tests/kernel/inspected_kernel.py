"""demo_kernel.py's kernel, with a service that tells what dispatch did: how often each opcode's
payload was parsed, and which hooks concern an opcode.

Run as ``python inspected_kernel.py --socket ... --state-dir ...``. Counting needs the kernel's
own decoders: each declared request's decoder is wrapped, and ``Request.fields`` (the decoded
request copied into a mapping, what ``Call.args()`` gives) counted, before the kernel starts;
only when run, never when a test imports the opcodes from here.
"""
from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from agentos.protocol import op_name, requests

PARSES, HOOKS = 0xF5, 0xF6

#: Payloads decoded, and decoded requests copied into a mapping, by opcode name.
decoded: Counter[str] = Counter()
copied: Counter[str] = Counter()


class CountingDecoder:
    def __init__(self, op: int, decoder: Any) -> None:
        self.name, self.decoder = op_name(op), decoder

    def decode(self, payload: bytes) -> Any:
        decoded[self.name] += 1
        return self.decoder.decode(payload)


def count_parses() -> None:
    """Count, from now on, every payload decoded and every decoded request copied."""
    for op, decoder in list(requests._DECODERS.items()):
        requests._DECODERS[op] = CountingDecoder(op, decoder)  # type: ignore[assignment]  # a stand-in
    fields = requests.Request.fields

    def counted_fields(self: requests.Request) -> dict[str, Any]:
        copied[op_name(self.op)] += 1
        return fields(self)

    requests.Request.fields = counted_fields  # type: ignore[method-assign]


class InspectionService:
    name = "inspection"

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def syscalls(self) -> dict[int, Any]:
        return {PARSES: self.parses, HOOKS: self.hooks}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def capabilities(self) -> dict[str, Any]:
        return {}

    async def parses(self, call: Any) -> dict[str, Any]:
        return {"decoded": dict(decoded), "copied": dict(copied)}

    async def hooks(self, call: Any) -> dict[str, Any]:
        """The guards and observers dispatch runs for the opcode ``op``, by qualified name."""
        op = call.args()["op"]
        return {"guards": [g.__qualname__ for g in self.kernel._guards.of(op)],
                "observers": [o.__qualname__ for o in self.kernel._observers.of(op)]}


if __name__ == "__main__":
    # Beside this file, which Python runs as a script.
    from demo_kernel import DemoService, serve  # type: ignore[import-not-found]

    count_parses()
    sys.exit(serve(sys.argv[1:], [DemoService, InspectionService]))
