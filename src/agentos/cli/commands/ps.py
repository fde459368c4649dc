"""``agentos ps``: the kernel's agents, one line each (name, id, pid, status, uptime, restarts, usage)."""
from __future__ import annotations

import argparse
import json
import time

from ..agents import PS_COLUMNS, Spent, cpu_seconds, latest, order, row, spent_by_id
from ..launch import add_socket_option, connect
from ..output import table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ps", help="list agents: name, id, pid, status, uptime, restarts, memory, cpu, tokens, usd")
    p.add_argument("-a", "--all", action="store_true",
                   help="every process the kernel remembers, earlier restarts included (default: one line "
                   "per agent name, its current or last process)")
    p.add_argument("--running", action="store_true", help="only running agents")
    p.add_argument("--json", action="store_true", help="the kernel's records as JSON, tokens and usd included")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        agents = client.list_agents(status="running" if args.running else None)
        spending = spent_by_id(client.usage())
    shown = order(agents if args.all else latest(agents))
    if args.json:
        print(json.dumps([{**info, "tokens": spending.get(info["id"], Spent()).tokens,
                           "usd": spending.get(info["id"], Spent()).usd} for info in shown], indent=2))
        return 0
    if not shown:
        print("no agents")
        return 0
    now = time.time()
    print(table(PS_COLUMNS, [row(info, spending, cpu_seconds(info), now) for info in shown]))
    return 0
