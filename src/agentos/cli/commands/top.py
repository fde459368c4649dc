"""``agentos top``: the running agents and their usage, refreshed."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..agents import PS_COLUMNS, order, row, spent_by_id
from ..launch import add_socket_option, connect, duration_option
from ..output import duration, table

_CLEAR = "\033[H\033[2J"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("top", help="watch running agents' memory, CPU and tasks")
    p.add_argument("-n", "--iterations", type=int, default=0, help="stop after this many refreshes (0: until Ctrl-C)")
    p.add_argument("--interval", type=duration_option, default="2s", help="time between refreshes (default 2s)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    redraw = sys.stdout.isatty()
    done = 0
    #: CPU microseconds and the time they were read, per agent id, for the percentage since last refresh.
    before: dict[str, tuple[int, float]] = {}
    # Ctrl-C ends it as it ends `up` and `logs -f`: main() turns KeyboardInterrupt into 130.
    with connect(args) as client:
        while True:
            hello = client.hello()
            agents = order(client.list_agents(status="running"))
            spending = spent_by_id(client.usage())
            now = time.time()
            header = (f"agentos {hello['version']} (pid {hello['pid']}, up {duration(hello['uptime'])}): "
                      f"{len(agents)} agent(s) running")
            rows = [row(info, spending, _cpu_percent(info, before, now), now) for info in agents]
            body = table(PS_COLUMNS, rows) if rows else ""
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
