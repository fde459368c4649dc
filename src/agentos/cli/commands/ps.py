"""``agentos ps``: the kernel's agents, one line each (name, id, pid, status, uptime, restarts, usage;
the node of agents on a cluster)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..agents import PS_COLUMNS, SORT_KEYS, Spent, cpu_seconds, latest, order, paint_status, row, spent_by_id
from ..launch import add_socket_option, connect
from ..output import Painter, table, wants_colour
from ..projects import add_project_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ps", help="list agents: name, id, pid, status, uptime, restarts, memory, cpu, tokens, usd")
    p.add_argument("-a", "--all", action="store_true",
                   help="every process the kernel remembers, earlier restarts included (default: one line "
                   "per agent name, its current or last process)")
    p.add_argument("--running", action="store_true", help="only running agents")
    add_project_option(p, what="every project's; a manifest's is its")
    add_sort_option(p)
    p.add_argument("--json", action="store_true", help="the kernel's records as JSON, tokens and usd included")
    add_socket_option(p)
    p.set_defaults(func=run)


def add_sort_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sort", choices=sorted(SORT_KEYS), default="started",
                   help="order of the running agents (and then of the ended ones): memory, cpu, restarts, "
                   "tokens and usd biggest first; default: started")


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        agents = client.list_agents(status="running" if args.running else None, project=args.project)
        spending = spent_by_id(client.usage())
    shown = order(agents if args.all else latest(agents), args.sort, spending)
    if args.json:
        print(json.dumps([{**info, "tokens": spending.get(info["id"], Spent()).tokens,
                           "usd": spending.get(info["id"], Spent()).usd} for info in shown], indent=2))
        return 0
    if not shown:
        print("no agents")
        return 0
    now = time.time()
    columns: tuple[str, ...] = PS_COLUMNS
    rows = [row(info, spending, cpu_seconds(info), now) for info in shown]
    if any(info.get("project") for info in shown):
        columns, rows = ("PROJECT", *columns), [[info.get("project") or "-", *r] for info, r in zip(shown, rows)]
    if any(info.get("node") for info in shown):
        # Placed on a cluster (agentos kernel --cluster): the first characters of its node's id.
        columns, rows = (*columns, "NODE"), [[*r, (info.get("node") or "-")[:8]] for info, r in zip(shown, rows)]
    text = table(columns, rows)
    print(paint_status(text, shown, Painter(wants_colour(sys.stdout))))
    return 0
