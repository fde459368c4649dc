"""An agent that tries what it is told to and prints one JSON line per attempt.

Attempts (argv): ``perms``, ``raise-perms``, ``kill=NAME``, ``spawn=CAP,CAP``,
``spawn-kill=CAP``, ``fetch-of=AGENT_ID``, ``shared``, ``http=URL``, ``think``,
``forge``, ``flood=NAME``, ``wait`` (block on RECV until killed).
"""
from __future__ import annotations

import json
import sys
from typing import Any

import agentos
from agentos.protocol import Op


def attempt(kernel: agentos.Client, spec: str) -> Any:
    what, _, arg = spec.partition("=")
    me = kernel.get_perms()
    if what == "perms":
        return me
    if what == "raise-perms":
        return kernel.set_perms(["admin"], agent=me["agent"])
    if what == "kill":
        return kernel.kill(arg, grace=1)["status"]
    if what == "spawn":
        return kernel.spawn(f"{me['name']}-child", __file__, args=["wait"],
                            capabilities=[c for c in arg.split(",") if c])["status"]
    if what == "spawn-kill":
        child = kernel.spawn(f"{me['name']}-kid", __file__, args=["wait"],
                             capabilities=[arg])
        return kernel.kill(id=child["id"], grace=1)["status"]
    if what == "fetch-of":
        return kernel.fetch("secret", agent=arg)
    if what == "shared":
        return kernel.store("k", 1, scope="shared")
    if what == "http":
        return kernel.http(arg)["status"]
    if what == "think":
        return kernel._call(Op.THINK, {"prompt": "hi"})
    if what == "forge":
        return kernel.publish("agent.exited", {"id": "someone", "name": "forged"})
    if what == "flood":
        sent = 0
        while sent < 100_000:
            kernel.send(arg, sent)
            sent += 1
        return sent
    if what == "wait":
        return kernel.recv()
    raise SystemExit(f"unknown attempt {spec!r}")


def main() -> int:
    with agentos.Client() as kernel:
        for spec in sys.argv[1:]:
            try:
                result: dict[str, Any] = {"attempt": spec, "ok": attempt(kernel, spec)}
            except agentos.SyscallError as exc:
                result = {"attempt": spec, "error": type(exc).__name__, "message": exc.message}
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
