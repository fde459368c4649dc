"""``agentos exec NAME -- COMMAND [ARGS...]``: run a command inside a running agent.

Its stdout and stderr go to ours as it writes them; we exit with its exit code (128 + the
signal that killed it, 124 when ``--timeout`` did, as timeout(1) does). ``-i`` passes our
stdin to it as we read it.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ...client.exec import ExecResult
from ...errors import AgentOSError
from ..launch import add_socket_option, connect, duration_option, env_option
from ..main import UserError

#: timeout(1)'s status for a command it stopped.
TIMED_OUT = 124


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("exec", help="run a command inside a running agent, confined as the agent is")
    p.add_argument("name", help="the agent's name (its id with --id)")
    p.add_argument("--id", action="store_true", help="NAME is an agent id")
    p.add_argument("-i", "--interactive", action="store_true", help="pass our stdin to the command")
    p.add_argument("-e", "--env", action="append", default=[], type=env_option, metavar="NAME=VALUE",
                   help="add a variable to the agent's environment (repeatable)")
    p.add_argument("-w", "--workdir", help="working directory, in the agent's view")
    p.add_argument("-u", "--user", help="run as the agent's own user (default) or 'nobody' (a lesser uid, "
                   "where the agent's isolation allows it); any other is refused")
    p.add_argument("--timeout", type=duration_option, help="kill the command after this long (exit 124)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the program and its arguments")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise UserError("name the command to run: agentos exec NAME -- COMMAND [ARGS...]")
    env = dict(args.env)
    target: dict[str, Any] = {"id": args.name} if args.id else {}
    agent = None if args.id else args.name
    options = {**target, "env": env, "cwd": args.workdir, "timeout": args.timeout, "user": args.user}
    with connect(args) as client:
        if not args.interactive:
            stream = client.exec_stream(agent, argv, **options)
            result = _relay(stream, lambda: stream.result)
        else:
            handle = client.exec_start(agent, argv, stdin_open=True, **options)
            feeder = threading.Thread(target=_feed, args=(args, handle["id"]), daemon=True)
            feeder.start()
            try:
                stream = client.exec_attach(handle["id"])
                result = _relay(stream, lambda: stream.result)
            except KeyboardInterrupt:
                client.exec_signal(handle["id"], "KILL")
                raise
    if result.timed_out:
        return TIMED_OUT
    return 128 + result.signal if result.signal is not None else int(result.exit_code or 0)


def _relay(pairs: Iterable[tuple[str, bytes]], result: Any) -> ExecResult:
    outputs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    for name, data in pairs:
        outputs[name].write(data)
        outputs[name].flush()
    final: ExecResult = result()
    return final


def _feed(args: argparse.Namespace, exec_id: str) -> None:
    """Our stdin to the command as we read it, then its end (a second connection: the first reads)."""
    try:
        with connect(args) as client:
            while data := os.read(sys.stdin.fileno(), 65536):
                if client.exec_input(exec_id, data)["closed"]:
                    return
            client.exec_input(exec_id, eof=True)
    except (AgentOSError, OSError):
        pass  # the command ended, or the kernel went: the output side reports it
