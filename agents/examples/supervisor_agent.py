"""A supervisor agent: starts a worker, watches its lifecycle events, restarts it when it fails.

    agentos spawn ... supervisor_agent.py -- --worker-script worker_agent.py --max-restarts 3

Lifecycle events arrive as stream frames on the ``agent.*`` topics; nothing is
polled. The worker is this agent's child, so the kernel lets it kill it too.
The supervisor needs ``spawn``, ``kill`` and ``message``, and can give the worker
no more than it holds. Each event and decision is printed as a JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import agentos

#: Endings that call for a restart; ``agent.exited`` with status "exited" (code 0) does not.
FAILURES = ("failed", "oom_killed")


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def supervise(kernel: agentos.Client, args: argparse.Namespace) -> int:
    spawn: dict[str, Any] = {
        "name": args.worker_name, "script": args.worker_script, "args": args.worker_args,
        "sandboxed": args.sandboxed, "allow_degraded": True,
        "capabilities": args.worker_capabilities.split(",") if args.worker_capabilities else None}
    # Subscribe before spawning, so not even a worker that dies at once goes unseen.
    with kernel.subscribe("agent.*") as events:
        kernel.ready()
        worker = kernel.spawn(**spawn)
        restarts = 0
        for event in events:
            if event.get("id") != worker["id"]:
                continue
            report(event=event["topic"], id=event["id"], status=event.get("status"),
                   exit_code=event.get("exit_code"))
            if event["topic"] in ("agent.started", "agent.ready"):
                continue
            if event.get("status") not in FAILURES:
                report(decision="done", restarts=restarts)
                return 0
            if restarts >= args.max_restarts:
                report(decision="giving up", restarts=restarts)
                return 1
            restarts += 1
            worker = kernel.spawn(**spawn)
            report(decision="restarted", restarts=restarts, id=worker["id"])
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-script", required=True, help="the worker's Python file")
    parser.add_argument("--worker-name", default="worker")
    parser.add_argument("--worker-args", nargs="*", default=[], help="arguments for the worker")
    parser.add_argument("--worker-capabilities", default="message",
                        help="comma-separated capabilities for the worker")
    parser.add_argument("--max-restarts", type=int, default=3)
    parser.add_argument("--sandboxed", action="store_true", help="sandbox the worker")
    args = parser.parse_args()
    with agentos.Client() as kernel:
        return supervise(kernel, args)


if __name__ == "__main__":
    sys.exit(main())
