"""``victim``: stores a secret in its own state, says READY and sleeps until killed. ``attack PID
ID``: from its own sandbox, goes after the victim (its pid on their node, its agent id) and
prints what each attempt gave as one JSON line."""
import json
import os
import signal
import sys
import time
from collections.abc import Callable

import agentos

with agentos.Client() as client:
    if sys.argv[1] == "victim":
        client.store("secret", "the victim's")
        client.ready()
        while True:
            time.sleep(60)
    pid, victim = int(sys.argv[2]), sys.argv[3]
    outcomes: dict[str, str] = {}

    def attempt(name: str, action: Callable[[], object]) -> None:
        try:
            action()
            outcomes[name] = "done"
        except Exception as exc:
            outcomes[name] = type(exc).__name__

    def environ() -> bytes:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()

    attempt("kill", lambda: os.kill(pid, signal.SIGKILL))
    attempt("environ", environ)
    attempt("fetch", lambda: client.fetch("secret", agent=victim))
    print(json.dumps(outcomes), flush=True)
