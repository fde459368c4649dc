"""The main program of a sandbox (``Client.sandbox``): it idles until the agent is driven from
outside (EXEC), and reaps what execs leave behind.

A sandboxed agent is pid 1 of its pid namespace, so every process orphaned inside it (the
killed rest of an exec's group, a daemon a cell double-forked) becomes its child; a pid 1 that
never waits would keep them as zombies, counted in the agent's ``pids`` limit, until it ends.
It ends when the kernel closes its connection (fd ``AGENTOS_FD``) or at SIGTERM (KILL).
It runs in the interpreter the zygote forked, so it costs no exec and no imports.
"""
from __future__ import annotations

import os
import select
import signal
import sys


def reap(*_: object) -> None:
    """Wait for every child that has ended (several may end per SIGCHLD)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    signal.signal(signal.SIGCHLD, reap)
    # pid 1 of a namespace ignores a signal it has no handler for; KILL's SIGTERM must end it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conn = int(os.environ.get("AGENTOS_FD", "3"))
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLHUP)
    reap()
    while True:
        # A SIGCHLD interrupts the wait, runs ``reap`` and the wait resumes (PEP 475).
        poller.poll()
        try:
            if not os.read(conn, 65536):
                return
        except BlockingIOError:
            continue
        except OSError:
            return


if __name__ == "__main__":
    main()
