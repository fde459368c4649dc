"""``agentos logs NAME [-f]``: an agent's captured output."""
from __future__ import annotations

import argparse
import sys

from ..launch import add_socket_option, connect


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("logs", help="print an agent's output (stdout and stderr)")
    p.add_argument("name", help="the agent's name (its id with --id)")
    p.add_argument("--id", action="store_true", help="NAME is an agent id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the agent ends")
    p.add_argument("--tail", type=int, help="only the last TAIL bytes (default 64 KiB)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = {"id": args.name} if args.id else {"agent": args.name}
    with connect(args) as client:
        if not args.follow:
            sys.stdout.write(client.logs(**target, tail=args.tail))
            return 0
        for chunk in client.follow_logs(**target, tail=args.tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    return 0
