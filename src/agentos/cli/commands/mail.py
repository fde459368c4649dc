"""``agentos mail``: dead letters, the messages a receiver was handed too often without
acknowledging them (``mail dead [PROJECT|NAME]``, ``mail requeue ID...``, ``mail drop ID...``)."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from ...protocol.requests import PROJECT_PATTERN
from ..launch import add_socket_option, connect
from ..output import table

PROJECT = re.compile(PROJECT_PATTERN)
#: Characters of a body shown in the table; --json prints it whole.
_BODY_WIDTH = 60


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mail", help="dead letters: list, requeue or drop messages that were never acknowledged")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    dead = actions.add_parser("dead", help="list dead letters (every mailbox you manage, a project's, or NAME's)")
    dead.add_argument("name", nargs="?", help="a project (with its agents' dead letters), or with -p or "
                      "--mailbox an agent's name, id or principal, or a registered name (another's needs "
                      "admin); default: every mailbox you manage")
    dead.add_argument("-p", "--project", help="only this project's agents' mailboxes")
    dead.add_argument("--mailbox", action="store_true", help="NAME is a mailbox, never a project")
    dead.add_argument("-n", "--limit", type=int, default=100, help="at most this many (default 100)")
    dead.add_argument("--json", action="store_true", help="the kernel's records as JSON")
    add_socket_option(dead)
    dead.set_defaults(func=list_dead)
    for action, text in (("requeue", "put dead letters back at the end of their mailbox, count reset"),
                         ("drop", "delete dead letters for good")):
        q = actions.add_parser(action, help=text)
        q.add_argument("ids", nargs="+", type=int, metavar="ID", help="a dead letter's id (from mail dead)")
        add_socket_option(q)
        q.set_defaults(func=move)


def list_dead(args: argparse.Namespace) -> int:
    from ..main import UserError

    if not 0 < args.limit <= 10_000:
        raise UserError("--limit must be from 1 to 10000")
    project, mailbox = args.project, args.name
    with connect(args) as client:
        if mailbox is not None and project is None and not args.mailbox \
                and PROJECT.fullmatch(mailbox) and client.list_page(project=mailbox, limit=1)["agents"]:
            # `agentos mail dead PROJECT`, compose-style: a name that is a project the kernel
            # knows means its agents' mailboxes, unless --mailbox says it is a mailbox.
            project, mailbox = mailbox, None
        reply = client.dead_letters(mailbox or "*", limit=args.limit, project=project)
    letters = reply["dead"]
    if args.json:
        print(json.dumps(letters, indent=2))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    print(table(["ID", "TO", "FROM", "DELIVERIES", "DIED", "BODY"], [_row(letter) for letter in letters]))
    if reply["more"]:
        print(f"(more than {len(letters)}; raise --limit)")
    return 0


def move(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "requeue":
            reply = client.requeue(*args.ids)
            done = [f"{d['id']} requeued to {d['to']} as {d['new_id']}" for d in reply["requeued"]]
            full, missing = reply["full"], reply["missing"]
        else:
            dropped = client.drop_dead_letters(*args.ids)
            done = [f"{message_id} dropped" for message_id in dropped]
            full, missing = [], [i for i in dict.fromkeys(args.ids) if i not in dropped]
    for line in done:
        print(line)
    for message_id in full:
        print(f"{message_id} not requeued: its mailbox is full", file=sys.stderr)
    for message_id in missing:
        print(f"{message_id}: no dead letter of yours has this id", file=sys.stderr)
    return 1 if full or missing else 0


def _row(letter: dict[str, Any]) -> list[str]:
    body = json.dumps(letter["body"])
    if len(body) > _BODY_WIDTH:
        body = body[:_BODY_WIDTH - 3] + "..."
    died = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter["dead_at"]))
    return [str(letter["id"]), letter["to"], letter["from"], str(letter["deliveries"]), died, body]
