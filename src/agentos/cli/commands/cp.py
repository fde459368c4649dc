"""``agentos cp SRC DEST`` (host <-> agent, like ``docker cp``) and ``agentos ls NAME [PATH]``.

One side of ``cp`` is ``NAME:PATH``, a path in that agent's view (relative: to its working
directory); the other is a local path. A directory goes as one tar stream, its contents into
the destination directory (made if missing); a file goes as itself (into a destination that is
an existing directory, under its own name). Everything is done inside the agent, as it.
"""
from __future__ import annotations

import argparse
import os
import posixpath
import re
import stat
import time

from ... import Client
from ...errors import NotFound
from ...protocol.requests import AGENT_NAME_PATTERN
from ..launch import add_socket_option, connect
from ..main import UserError

#: ``NAME:`` at the start of a path: the agent name pattern without its end anchor.
_REMOTE = re.compile(AGENT_NAME_PATTERN.removesuffix(r"\Z") + ":")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cp", help="copy files or directories between this host and an agent (NAME:PATH)")
    p.add_argument("source", help="a local path or NAME:PATH")
    p.add_argument("destination", help="a local path or NAME:PATH (exactly one side is an agent's)")
    add_socket_option(p)
    p.set_defaults(func=run_cp)
    p = sub.add_parser("ls", help="list a directory of an agent (its view, as it sees it)")
    p.add_argument("name", help="the agent's name")
    p.add_argument("path", nargs="?", default=".", help="a directory in its view (default: its working directory)")
    p.add_argument("-R", "--depth", type=int, default=1, metavar="N", help="levels down to list (default 1)")
    p.add_argument("-l", "--long", action="store_true", help="type, mode, size and modification time")
    add_socket_option(p)
    p.set_defaults(func=run_ls)


def _split(spec: str) -> tuple[str, str] | None:
    """(agent, path) of ``NAME:PATH``; None for a local path."""
    match = _REMOTE.match(spec)
    if match is None:
        return None
    return spec[:match.end() - 1], spec[match.end():] or "."


def run_cp(args: argparse.Namespace) -> int:
    source, destination = _split(args.source), _split(args.destination)
    if (source is None) == (destination is None):
        raise UserError("exactly one of SOURCE and DESTINATION must be NAME:PATH (an agent's path)")
    with connect(args) as client:
        if destination is not None:
            agent, path = destination
            if os.path.isdir(args.source):
                done = client.upload_dir(agent, args.source, path)
                print(f"{args.source} -> {agent}:{path}: {done['files']} files, {done['dirs']} directories, "
                      f"{done['symlinks']} symlinks")
                return 0
            if path.endswith("/") or _is_dir(client, agent, path):
                path = posixpath.join(path, os.path.basename(args.source))
            with open(args.source, "rb") as f:
                data = f.read()
            done = client.write_file(agent, path, data, mode=stat.S_IMODE(os.stat(args.source).st_mode))
            print(f"{args.source} -> {agent}:{path}: {done['written']} bytes")
            return 0
        assert source is not None
        agent, path = source
        local = args.destination
        if client.stat(agent, path, follow=True).type == "dir":
            archive = client.download_dir(agent, path, local)
            print(f"{agent}:{path} -> {local}: {len(archive)} bytes of tar")
            return 0
        if os.path.isdir(local):
            local = os.path.join(local, posixpath.basename(path.rstrip("/")))
        written = 0
        with open(local, "wb") as f:
            for chunk in client.read_file_stream(agent, path):
                f.write(chunk)
                written += len(chunk)
        print(f"{agent}:{path} -> {local}: {written} bytes")
    return 0


def _is_dir(client: Client, agent: str, path: str) -> bool:
    try:
        return client.stat(agent, path, follow=True).type == "dir"
    except NotFound:
        return False


def run_ls(args: argparse.Namespace) -> int:
    if not 1 <= args.depth <= 64:
        raise UserError("--depth must be 1..64")
    with connect(args) as client:
        entries = client.list_dir(args.name, args.path, depth=args.depth)
    for entry in entries:
        name = entry.path + ("/" if entry.type == "dir" else "")
        if entry.target is not None:
            name += f" -> {entry.target}"
        if args.long:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime))
            print(f"{entry.type:<7} {entry.mode:04o} {entry.size:>12} {when}  {name}")
        else:
            print(name)
    return 0
