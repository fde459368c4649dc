"""``agentos expose NAME PORT``: reach a server on an agent's own loopback from this host.

Prints the address (a Unix socket only this user may connect to; with ``--tcp`` a
127.0.0.1 port, guarded by uid) and holds the exposure until Ctrl-C (exit 130) or its
end (the agent ended, or someone unexposed it): the exposure lives as long as this
command's connection to the kernel.
"""
from __future__ import annotations

import argparse
import sys

from ..launch import add_socket_option, connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("expose", help="reach PORT on an agent's own loopback from this host, until Ctrl-C")
    p.add_argument("name", help="the agent's name (its id with --id)")
    p.add_argument("port", type=int, help="the port the agent listens on, on its 127.0.0.1")
    p.add_argument("--id", action="store_true", help="NAME is an agent id")
    p.add_argument("--tcp", action="store_true",
                   help="also a 127.0.0.1 port (printed instead of the socket path); connections "
                        "from another uid's sockets are closed")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = {"id": args.name, "agent": None} if args.id else {"agent": args.name}
    with connect(args) as client:
        exposure = client.expose(port=args.port, tcp=args.tcp, **target)
        print(exposure.address, flush=True)
        if exposure.tcp is not None:
            print(f"also at {exposure.path}", file=sys.stderr, flush=True)
        ended = exposure.wait()
    print(f"exposure ended ({ended['ended']}): {ended['accepted']} connections, {ended['bytes_in']} bytes in, "
          f"{ended['bytes_out']} out", file=sys.stderr)
    return 0
