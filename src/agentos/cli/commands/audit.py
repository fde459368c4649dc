"""``agentos audit``: print the kernel's syscall audit log (its rotated files too), optionally
following it."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from ...units import parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="show the syscall audit log (admin)")
    p.add_argument("--agent", help="only this agent (name or id) or outside uid ('uid:1000')")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--limit", "-n", type=int, default=100,
                   help="how many past records to show first (default 100)")
    p.add_argument("--since", type=when, help="only records from then on: a time (2026-12-07T10:00:00, "
                   "UTC unless it says otherwise; or Unix seconds) or how long ago (30s, 10m, 2h)")
    p.add_argument("--until", type=when, help="only records before then (as --since)")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.add_argument("--socket", type=Path, help="kernel socket (default: $AGENTOS_SOCKET or the default path)")
    p.set_defaults(func=run)


def format_record(record: dict[str, Any]) -> str:
    """One human line: time, caller, syscall, outcome, latency, then what it asked (``key=value``)."""
    if "dropped" in record:
        return f"... {record['dropped']} records dropped (the reader fell behind)"
    ts = record.get("ts", 0.0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
    who = record.get("name") or record.get("agent") or f"uid:{record.get('uid')}"
    asked = " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                     for key, value in (record.get("args") or {}).items())
    return (f"{stamp}  {who:<20} {record.get('op', '?'):<12} {record.get('outcome', '?'):<18} "
            f"{record.get('latency_ms', 0):>9.3f}ms  {asked}").rstrip()


def when(text: str) -> float:
    """``--since``/``--until``: Unix seconds, an ISO 8601 time, or a duration ago."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (2026-12-07T10:00:00, Unix seconds) "
                                         "or a duration ago (30s, 10m, 2h)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def run(args: argparse.Namespace) -> int:
    from ...client import Client
    from ..main import UserError

    if args.limit < 0:
        raise UserError("--limit must not be negative")
    with Client(args.socket) as client:
        for record in client.audit(args.agent, follow=args.follow, limit=args.limit, since=args.since,
                                   until=args.until):
            line = json.dumps(record) if args.json else format_record(record)
            print(line, flush=args.follow)
    sys.stdout.flush()
    return 0
