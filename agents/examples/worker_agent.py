"""A worker that reports in: READY once, then a heartbeat line every ``--interval`` seconds.

Run it under the kernel (``agentos.Client().spawn("worker", "worker_agent.py")``);
its heartbeats show up in ``logs``. It exits cleanly on SIGTERM (what KILL sends
first) and after ``--beats`` heartbeats if given.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import agentos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument("--beats", type=int, default=0, help="stop after this many (0: run until killed)")
    args = parser.parse_args()
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    with agentos.Client() as kernel:
        me = kernel.ready()
        print(f"worker {me['name']} ({me['id']}) ready", flush=True)
        beat = 0
        while not stopping and (args.beats == 0 or beat < args.beats):
            beat += 1
            # NOOP round-trips the kernel: the heartbeat proves the connection is alive too.
            kernel.echo(f"heartbeat {beat}")
            print(f"heartbeat {beat}", flush=True)
            time.sleep(args.interval)
        print("worker stopping" if stopping else "worker done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
