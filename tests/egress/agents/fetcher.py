"""An agent that tries what it is told and prints one JSON line per attempt.

Attempts (argv): ``http=URL``; ``spawn=ENTRY,ENTRY`` spawns a child (itself, told to
``http=URL`` of the next ``child-http=URL`` attempt) with that egress list; ``spawn=``
with nothing after it spawns one that inherits.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import agentos
from agentos.protocol import Op


def attempt(kernel: agentos.Client, spec: str, child_args: list[str]) -> Any:
    what, _, arg = spec.partition("=")
    if what == "http":
        reply = kernel.http(arg)
        return {"status": reply["status"], "body": json.loads(reply["body"])}
    if what == "spawn":
        me = kernel.get_perms()["name"]
        request: dict[str, Any] = {"name": f"{me}-child", "script": __file__, "args": child_args,
                                   "capabilities": ["http"]}
        if arg:
            request["egress"] = arg.split(",")
        child = kernel._call(Op.SPAWN, request)
        ended = kernel.wait(id=child["id"], timeout=60)
        return {"exit_code": ended["exit_code"], "logs": kernel.logs(id=child["id"])}
    raise SystemExit(f"unknown attempt {spec!r}")


def main() -> int:
    attempts = [a for a in sys.argv[1:] if not a.startswith("child-")]
    child_args = [a.removeprefix("child-") for a in sys.argv[1:] if a.startswith("child-")]
    with agentos.Client() as kernel:
        for spec in attempts:
            try:
                result: dict[str, Any] = {"attempt": spec, "ok": attempt(kernel, spec, child_args)}
            except agentos.SyscallError as exc:
                result = {"attempt": spec, "error": exc.code.value, "message": exc.message,
                          "details": exc.details}
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
