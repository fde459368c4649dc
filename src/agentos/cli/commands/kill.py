"""``agentos kill NAME``: stop an agent (SIGTERM, then SIGKILL after the grace period)."""
from __future__ import annotations

import argparse

from ..launch import add_socket_option, connect, duration_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kill", help="stop an agent and its whole process tree")
    p.add_argument("name", help="the agent's name (its id with --id)")
    p.add_argument("--id", action="store_true", help="NAME is an agent id")
    p.add_argument("--grace", type=duration_option, default="10s",
                   help="time between SIGTERM and SIGKILL (default 10s)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = {"id": args.name} if args.id else {"agent": args.name}
    with connect(args) as client:
        info = client.kill(**target, grace=args.grace)
    state = "stopped" if info["killed"] else "was not running"
    print(f"{info['name']} ({info['id']}) {state}: {info['status']}")
    return 0
