"""An agent that runs mail steps in order and prints one JSON line per step.

Steps (argv): ``register=NAME``, ``send=TO`` (the full SEND reply, so the address is
visible), ``recv=TIMEOUT`` (acknowledged on delivery), ``ready``, ``await-ready=AGENT``, ``await=AGENT``, and
``spawn=NAME;STEP;STEP...`` (a sandboxed child running this script with those steps).
Dead letters: ``take=TIMEOUT`` (RECV that tolerates one delivery, not acknowledged),
``dead=MAILBOX`` (list; empty for its own), ``requeue=ID`` and ``drop=ID``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import agentos
from agentos.protocol import Op


def step(kernel: agentos.Client, spec: str) -> Any:
    what, _, arg = spec.partition("=")
    if what == "register":
        return kernel.register(arg)
    if what == "send":
        return kernel._call(Op.SEND, {"to": arg, "body": {"from": kernel.get_perms()["principal"]}})
    if what == "recv":
        return kernel.recv(timeout=float(arg), ack=True)
    if what == "take":
        return kernel.recv(timeout=float(arg), max_deliveries=1)
    if what == "dead":
        return kernel.dead_letters(arg or None)
    if what == "requeue":
        return kernel.requeue(int(arg))
    if what == "drop":
        return kernel.drop_dead_letters(int(arg))
    if what == "ready":
        return kernel.ready()
    if what == "await-ready":
        return kernel.wait(arg, until="ready", timeout=60)["status"]
    if what == "await":
        return kernel.wait(arg, timeout=60)["exit_code"]
    if what == "spawn":
        name, *steps = arg.split(";")
        return kernel.spawn(name, __file__, args=steps)["status"]
    raise SystemExit(f"unknown step {spec!r}")


def main() -> int:
    with agentos.Client() as kernel:
        for spec in sys.argv[1:]:
            try:
                result: dict[str, Any] = {"step": spec, "ok": step(kernel, spec)}
            except agentos.SyscallError as exc:
                result = {"step": spec, "error": type(exc).__name__, "message": exc.message,
                          "details": exc.details}
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
