"""A fork bomb: forks until fork() is refused, then reports how far it got and cleans up.

The pids limit of its cgroup (32 in showcase.yaml) stops it; nothing else on
the host notices. It gives up by itself after 500 processes, so a host
without the limit survives it, and then it says so.
"""
from __future__ import annotations

import errno
import os
import signal
import sys

BOUND = 500


def main() -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        # Noted, not raised: an exception inside fork()'s bookkeeping would be swallowed.
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print("forking until fork() fails", flush=True)
    children: list[int] = []
    refused = None
    while len(children) < BOUND and not stopping:
        try:
            pid = os.fork()
        except OSError as exc:
            refused = exc
            break
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pause()
            os._exit(0)
        children.append(pid)
    if stopping:
        print(f"asked to stop after {len(children)} processes", flush=True)
    elif refused is not None:
        name = errno.errorcode.get(refused.errno or 0, str(refused.errno))
        print(f"fork bomb contained: fork() refused with {name} ({refused.strerror}) after "
              f"{len(children)} processes", flush=True)
    else:
        print(f"forked {BOUND} processes and was never refused: no pids limit is enforced on this host",
              flush=True)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)
    print(f"cleaned up {len(children)} processes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
