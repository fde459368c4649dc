"""``agentos approvals``, ``agentos approve ID``, ``agentos deny ID --reason``: the MCP tool calls
waiting for a human (docs/mcp.md, Approvals)."""
from __future__ import annotations

import argparse
import json
import time

from ..launch import add_socket_option, connect
from ..output import duration, table

#: The arguments column is cut to this many characters (``--json`` shows them whole).
_ARGS_WIDTH = 60


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("approvals", help="list the MCP tool calls waiting for your approval")
    p.add_argument("--json", action="store_true", help="print the approvals as JSON")
    add_socket_option(p)
    p.set_defaults(func=list_pending)
    for action, text in (("approve", "let a waiting tool call run"), ("deny", "refuse a waiting tool call")):
        p = sub.add_parser(action, help=text)
        p.add_argument("id", help="the approval's id (agentos approvals)")
        p.add_argument("--reason", help="why: kept in the audit log, told to the model")
        add_socket_option(p)
        p.set_defaults(func=settle, action=action)


def list_pending(args: argparse.Namespace) -> int:
    with connect(args) as client:
        pending = client.approvals()
    if args.json:
        print(json.dumps(pending, indent=2))
        return 0
    if not pending:
        print("no tool call is waiting for approval")
        return 0
    now = time.time()
    rows = [[a["id"], a["name"] or f"uid:{a['owner_uid']}", a["tool"], _arguments(a["arguments"]),
             f"in {duration(a['expires_at'] - now)}"] for a in pending]
    print(table(["ID", "AGENT", "TOOL", "ARGS", "EXPIRES"], rows))
    return 0


def settle(args: argparse.Namespace) -> int:
    with connect(args) as client:
        method = client.approve if args.action == "approve" else client.deny
        record = method(args.id, args.reason)
    who = record["name"] or f"uid:{record['owner_uid']}"
    print(f"{record['id']} {record['status']}: {record['tool']} for {who}")
    return 0


def _arguments(arguments: dict[str, object]) -> str:
    text = json.dumps(arguments, ensure_ascii=False)
    return text if len(text) <= _ARGS_WIDTH else text[:_ARGS_WIDTH - 3] + "..."
