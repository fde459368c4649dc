"""``agentos purge PROJECT``: remove a project's mailboxes, state, registered names and volumes."""
from __future__ import annotations

import argparse
import sys

from ...errors import AgentOSError
from ..launch import add_socket_option, connect
from ..projects import project_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("purge", help="remove a project's mailboxes, state, registered names and volumes (its "
                       "agents must have ended; yours, or every uid's for an admin)")
    p.add_argument("project", type=project_option, help="the project")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            removed = client.purge(args.project)
        except AgentOSError as exc:
            print(f"agentos purge: error: {exc}", file=sys.stderr)
            return 1
    print(f"project {args.project}: removed {removed.get('messages', 0)} messages, "
          f"{removed.get('dead_letters', 0)} dead letters, {removed.get('names', 0)} names, "
          f"{removed.get('keys', 0)} state keys and {removed.get('volumes', 0)} volumes")
    return 0
