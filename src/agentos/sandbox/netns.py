"""The socket maker of an EXPOSE: a small process inside one agent's network namespace.

A socket belongs to the network namespace it was made in, whoever holds it later and
wherever it is connected from. So the kernel does not need to enter the agent to reach
its loopback: it needs sockets *made* there. This process joins the agent's namespaces
through the agent's pidfd (user namespace first, in one ``setns``: in it a rootless
kernel holds what joining the network namespace needs; joining a user namespace takes a
single-threaded process, which the kernel is not), and then, for each byte the kernel
sends on its control socket, answers with one new unconnected TCP socket (SCM_RIGHTS).
The kernel connects it to ``127.0.0.1:PORT`` itself; the agent's namespace gains no
interface, route or address.

It is run as a script (``python -I -S netns.py CONTROL_FD PIDFD NAMESPACES``), never
imported: no site, no agentos, no environment but the zygote's base one, so it starts
in a few milliseconds and holds nothing of the kernel's. It is not in the agent's pid
namespace, cgroup or view, so the agent can neither see nor signal it. End of file on
its control socket (the exposure ended, or the kernel died) ends it.

First message: ``R`` (joined) or ``E`` + the errno and its text; then ``S`` + one fd per request.
"""
from __future__ import annotations

import ctypes
import os
import socket
import sys


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    target, namespaces = int(argv[2]), int(argv[3])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(target, namespaces) != 0:
        err = ctypes.get_errno()
        control.send(b"E%d %s" % (err, os.strerror(err).encode()))
        return 1
    os.close(target)
    control.send(b"R")
    try:
        while control.recv(1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as made:
                socket.send_fds(control, [b"S"], [made.fileno()])
    except ConnectionError:
        pass  # the kernel closed its end with an answer unread: the same end
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
