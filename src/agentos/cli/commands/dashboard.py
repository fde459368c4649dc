"""``agentos dashboard``: a live web page of the kernel, on a loopback port, behind a token.

It runs as a client of the kernel with this user's identity: it shows what LIST, USAGE, LOGS,
AUDIT and DEAD_LETTERS show this user, and its buttons are the KILL, START, PAUSE and RESUME
this user may call (docs/observability.md#dashboard).
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from ..launch import add_socket_option, duration_option, socket_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve a live web page of the kernel on a loopback port (prints its URL)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="a loopback address and port (default 127.0.0.1:0: a free port)")
    p.add_argument("--interval", type=duration_option, default="2s",
                   help="how often memory, CPU and spending are sampled for the charts (default 2s)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...dashboard import Dashboard, parse_listen
    from ..main import UserError

    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.interval <= 0:
        raise UserError("--interval: must be more than 0")
    dashboard = Dashboard(socket_path(args.socket), listen, interval=args.interval)

    def ready(url: str) -> None:
        # The one line a user (or a test) reads: the token is in it, and nowhere else.
        print(f"agentos dashboard: {url}", flush=True)
        print("  (the token in this URL is the key to act as you on the kernel: keep it to yourself)",
              file=sys.stderr, flush=True)

    asyncio.run(dashboard.run(ready))
    return 0
