"""``agentos volume ls|inspect|rm``: the named volumes of your projects (compose's words)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..launch import add_socket_option, connect
from ..output import size, table
from ..projects import project_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("volume", help="list, inspect or remove named volumes (a project's directories with a "
                       "disk quota that outlive its agents)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("ls", help="your volumes (an admin's: every uid's)")
    ls.add_argument("--json", action="store_true", help="the kernel's records as JSON")
    inspect = actions.add_parser("inspect", help="one volume, as JSON")
    inspect.add_argument("name", help="the volume")
    rm = actions.add_parser("rm", help="delete volumes and their data (no agent may be using them)")
    rm.add_argument("name", nargs="+", help="the volumes")
    for action in (ls, inspect, rm):
        action.add_argument("-p", "--project", type=_project, metavar="NAME",
                            help="only this project's (`-` for no project's; default: every project's)")
        action.add_argument("--uid", type=int, help="another uid's volumes (admins only)")
        add_socket_option(action)
    p.set_defaults(func=run)


def _project(text: str) -> str:
    return "" if text == "-" else project_option(text)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "ls":
            volumes = client.list_volumes(args.project, uid=args.uid)
            if args.json:
                print(json.dumps(volumes, indent=2))
            elif not volumes:
                print("no volumes")
            else:
                print(table(("PROJECT", "NAME", "UID", "KIND", "SIZE", "ON DISK", "IN USE BY"),
                            [_row(v) for v in volumes]))
        elif args.action == "inspect":
            print(json.dumps(client.inspect_volume(args.name, project=args.project, uid=args.uid), indent=2))
        else:
            for name in args.name:
                for volume in client.remove_volume(name, project=args.project, uid=args.uid)["removed"]:
                    print(f"removed volume {volume['name']} of {volume['project'] or 'no project'}")
    return 0


def _row(volume: dict[str, Any]) -> list[str]:
    return [volume["project"] or "-", volume["name"], str(volume["uid"]), volume["kind"],
            size(volume["size"]) if volume["size"] else "-",
            size(volume["allocated"]) if "allocated" in volume else "-", ", ".join(volume["in_use"]) or "-"]
