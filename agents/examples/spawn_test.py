"""Spawn a worker, watch it, read its heartbeats, then kill it (the seed's spawn test).

    agentos kernel &              # as root for cgroup limits and the sandbox
    python agents/examples/spawn_test.py [--unsandboxed] [--allow-degraded]

Run from outside, it talks to the kernel at $AGENTOS_SOCKET; run as an agent, it
uses the connection the kernel gave it and the worker becomes its child.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import agentos

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_agent.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unsandboxed", action="store_true", help="run the worker without the sandbox")
    parser.add_argument("--allow-degraded", action="store_true",
                        help="run even if some isolation layer is unavailable here (reported)")
    parser.add_argument("--beats", type=int, default=3, help="heartbeats to wait for before killing")
    args = parser.parse_args()

    with agentos.Client() as kernel:
        worker = kernel.spawn("worker", WORKER, args=["--interval", "0.2"],
                              sandboxed=not args.unsandboxed, allow_degraded=args.allow_degraded,
                              limits={"memory": "256Mi", "pids": 32, "cpu": 0.5})
        print(f"spawned {worker['name']} id={worker['id']} pid={worker['pid']}")
        print("isolation:", json.dumps(worker["isolation"], indent=2))
        kernel.wait(id=worker["id"], until="ready", timeout=30)
        for agent in kernel.list_agents():
            print(f"  {agent['id']} {agent['name']:<10} {agent['status']:<10} pid={agent['pid']} "
                  f"parent={agent['parent']} memory={agent['usage']['memory_current']}")
        seen = ""
        for chunk in kernel.follow_logs(id=worker["id"]):
            seen += chunk
            print(chunk, end="")
            if seen.count("heartbeat") >= args.beats:
                break
        end = kernel.kill(id=worker["id"], grace=2)
        print(f"killed: status={end['status']} exit_code={end['exit_code']} signal={end['signal']}")
    return 0 if end["status"] == "killed" else 1


if __name__ == "__main__":
    sys.exit(main())
