"""A memory hog: touches memory 8 MiB at a time until the kernel's OOM killer stops it.

Its cgroup memory limit (64Mi in showcase.yaml) ends it within a second; the
other agents carry on. It stops by itself at 512 MiB, so a host that cannot
enforce the limit survives it, and then it says the limit was not enforced.
"""
from __future__ import annotations

import sys
import time

STEP_MIB = 8
BOUND_MIB = 512


def main() -> int:
    print("allocating memory 8 MiB at a time until something stops me", flush=True)
    time.sleep(1.0)
    chunks = []
    while len(chunks) * STEP_MIB < BOUND_MIB:
        chunk = bytearray(STEP_MIB * 1024 * 1024)
        chunk[::4096] = b"\1" * len(chunk[::4096])  # every page touched: resident, not just reserved
        chunks.append(chunk)
        held = len(chunks) * STEP_MIB
        if held <= 64 or held % 64 == 0:
            print(f"holding {held} MiB", flush=True)
        time.sleep(0.05)
    print(f"reached {BOUND_MIB} MiB and nobody stopped me: no memory limit is enforced on this host",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
