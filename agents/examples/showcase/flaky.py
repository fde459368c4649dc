"""An unstable agent: it crashes on its first two starts and works on the third.

Its restart policy (on-failure) makes the kernel start it again after each
crash. It counts its starts in the kernel's shared state, since each restart
is a new process with a new agent id; the count expires after a minute, so an
interrupted run does not affect the next one.
"""
from __future__ import annotations

import sys
import time

import agentos
from agentos.client.state import ABSENT

KEY = "showcase.flaky.starts"
CRASHES = 2


def count_start(kernel: agentos.Client) -> int:
    while True:
        try:
            starts = kernel.fetch(KEY, scope="shared")
        except agentos.NotFound:
            starts = ABSENT
        new = 1 if starts is ABSENT else starts + 1
        if kernel.cas(KEY, starts, new, ttl=60, scope="shared"):
            return new


def main() -> int:
    with agentos.Client() as kernel:
        start = count_start(kernel)
        if start <= CRASHES:
            print(f"start {start}: something went wrong, crashing with exit code 1", flush=True)
            return 1
        print(f"start {start}: working now, after the kernel restarted me {start - 1} times", flush=True)
        time.sleep(1)
        kernel.delete(KEY, scope="shared")
    print("done, exiting cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
