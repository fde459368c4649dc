"""``agentos top``: the running agents and their usage, refreshed."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..agents import PS_COLUMNS, Spent, order, paint_status, row, spent_by_id
from ..launch import add_socket_option, connect, duration_option
from ..output import Painter, duration, table, wants_colour
from .ps import add_sort_option

_CLEAR = "\033[H\033[2J"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("top", help="watch running agents' memory, CPU and tasks")
    p.add_argument("-n", "--iterations", type=int, default=0, help="stop after this many refreshes (0: until Ctrl-C)")
    p.add_argument("--interval", type=duration_option, default="2s", help="time between refreshes (default 2s)")
    add_sort_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object a line per refresh: {kernel, agents}, "
                   "each agent's record with cpu_percent, tokens and usd")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    redraw = sys.stdout.isatty() and not args.json
    paint = Painter(wants_colour(sys.stdout) and not args.json)
    done = 0
    #: CPU microseconds and the time they were read, per agent id, for the percentage since last refresh.
    before: dict[str, tuple[int, float]] = {}
    # Ctrl-C ends it as it ends `up` and `logs -f`: main() turns KeyboardInterrupt into 130.
    with connect(args) as client:
        while True:
            hello = client.hello()
            spending = spent_by_id(client.usage())
            agents = order(client.list_agents(status="running"), args.sort, spending)
            now = time.time()
            cpu = [_cpu_percent(info, before, now) for info in agents]
            if args.json:
                sys.stdout.write(json.dumps({
                    "kernel": {key: hello[key] for key in ("version", "pid", "uptime")},
                    "agents": [{**info, "cpu_percent": None if percent == "-" else float(percent.rstrip("%")),
                                "tokens": spending.get(info["id"], Spent()).tokens,
                                "usd": spending.get(info["id"], Spent()).usd}
                               for info, percent in zip(agents, cpu)]}) + "\n")
            else:
                header = (f"agentos {hello['version']} (pid {hello['pid']}, up {duration(hello['uptime'])}): "
                          f"{len(agents)} agent(s) running")
                rows = [row(info, spending, percent, now) for info, percent in zip(agents, cpu)]
                body = paint_status(table(PS_COLUMNS, rows), agents, paint) if rows else ""
                sys.stdout.write((_CLEAR if redraw else "") + header + "\n" + (body + "\n" if body else ""))
            sys.stdout.flush()
            done += 1
            if args.iterations and done >= args.iterations:
                return 0
            time.sleep(args.interval)


def _cpu_percent(info: Mapping[str, Any], before: dict[str, tuple[int, float]], now: float) -> str:
    """CPU use in percent of one core since the previous refresh, or on the first one since the
    agent started; ``-`` only where the host cannot tell."""
    usec = (info.get("usage") or {}).get("cpu_usage_usec")
    if usec is None:
        return "-"
    previous = before.get(info["id"], (0, info["started_at"]))
    before[info["id"]] = (usec, now)
    if now <= previous[1]:
        return "0%"
    return f"{(usec - previous[0]) / 1e6 / (now - previous[1]) * 100:.0f}%"
