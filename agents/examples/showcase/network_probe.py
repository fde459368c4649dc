"""An agent that tries to reach the internet: every attempt is refused in its sandbox.

Without ``sandbox.network: true`` the agent has its own network namespace
holding only a loopback interface, so there is no route anywhere. Reaching
the network is reported as loudly as being refused.
"""
from __future__ import annotations

import errno
import socket
import sys


def attempt(what: str, connect) -> bool:
    try:
        connect()
    except OSError as exc:
        if isinstance(exc, socket.gaierror):
            reason = f"name lookup failed ({exc.strerror})"
        else:
            reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            reason = f"{reason} ({exc.strerror})" if exc.strerror else reason
        print(f"{what}: refused: {reason}", flush=True)
        return False
    print(f"{what}: CONNECTED", flush=True)
    return True


def tcp(host: str, port: int):
    def go() -> None:
        with socket.create_connection((host, port), timeout=3):
            pass
    return go


def main() -> int:
    interfaces = [name for _, name in socket.if_nameindex()]
    print(f"network interfaces I can see: {', '.join(interfaces)}", flush=True)
    reached = [attempt("connect to 1.1.1.1:443", tcp("1.1.1.1", 443)),
               attempt("connect to 8.8.8.8:53", tcp("8.8.8.8", 53)),
               attempt("look up pypi.org", lambda: socket.getaddrinfo("pypi.org", 443))]
    if any(reached):
        print("network NOT isolated: this agent reached the outside world", flush=True)
    else:
        print("network refused: no way out of the sandbox", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
