"""``agentos pause NAME`` and ``agentos resume NAME``: freeze an agent (and its descendants), thaw it."""
from __future__ import annotations

import argparse

from ..launch import add_socket_option, connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, doc in (("pause", "freeze an agent and its descendants (cgroup freezer): no CPU until resumed"),
                      ("resume", "thaw an agent paused with `agentos pause`")):
        p = sub.add_parser(verb, help=doc)
        p.add_argument("name", help="the agent's name (its id with --id)")
        p.add_argument("--id", action="store_true", help="NAME is an agent id")
        add_socket_option(p)
        p.set_defaults(func=run, verb=verb)


def run(args: argparse.Namespace) -> int:
    target = {"id": args.name} if args.id else {"agent": args.name}
    with connect(args) as client:
        info = client.pause(**target) if args.verb == "pause" else client.resume(**target)
    changed = info["paused"] if args.verb == "pause" else info["resumed"]
    print(f"{info['name']} ({info['id']}) {args.verb + 'd' if changed else 'unchanged'}: {info['status']}")
    return 0
