"""``agentos audit``: print the kernel's syscall audit log, optionally following it."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="show the syscall audit log (admin)")
    p.add_argument("--agent", help="only this agent (name or id) or outside uid ('uid:1000')")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--limit", "-n", type=int, default=100,
                   help="how many past records to show first (default 100)")
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


def run(args: argparse.Namespace) -> int:
    from ...client import Client
    from ..main import UserError

    if args.limit < 0:
        raise UserError("--limit must not be negative")
    with Client(args.socket) as client:
        for record in client.audit(args.agent, follow=args.follow, limit=args.limit):
            line = json.dumps(record) if args.json else format_record(record)
            print(line, flush=args.follow)
    sys.stdout.flush()
    return 0
