"""An agent that does not read its mail until told to: argv ``FLAG COUNT``.

While the file FLAG does not exist it only sleeps (it never calls RECV, so the kernel knows
its principal from SPAWN alone). Once FLAG exists it receives COUNT messages, acknowledging
each, sends their bodies in order to the registered name ``results``, and exits 0.
"""
from __future__ import annotations

import os
import sys
import time

import agentos


def main() -> int:
    flag, count = sys.argv[1], int(sys.argv[2])
    if not os.path.exists(flag):
        while True:  # until it is killed
            time.sleep(3600)
    with agentos.Client() as kernel:
        bodies = [kernel.recv(timeout=60, ack=True)["body"] for _ in range(count)]
        kernel.send("results", {"name": kernel.get_perms()["principal"], "bodies": bodies})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
