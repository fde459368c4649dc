"""``agentos sandbox create|ls|kill|connect``: sandboxes from the shell, as ``client.sandbox()``.

A sandbox is an agent that idles until driven (``sandbox/idle.py``). ``create`` starts one,
with every option ``client.sandbox()`` takes (volumes as ``-v NAME:/PATH[:ro,size=SIZE]``),
and prints its name (``docker run -d`` prints an id, ``e2b sandbox spawn`` an id: a name is
what every other command here takes); it keeps running after this command, until its
``--timeout`` (10m), ``sandbox kill`` or the kernel's end. ``ls`` lists the sandboxes (agents
running the idle program), ``kill`` (``rm``) ends them with everything running inside, and
``connect`` opens an interactive shell in one on a terminal (``docker exec -it``).

Driving one is what the general commands do for any agent, so there are no copies here:
``agentos exec NAME -- CMD`` (``--user nobody``, ``-i``), ``agentos cp`` and ``agentos ls``
for files, ``agentos expose NAME PORT``, ``agentos pause``/``resume``, ``agentos logs``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator, Mapping
from typing import Any

from ...client.sandbox import IDLE
from ...errors import AgentOSError, InvalidArgument, NotFound
from ...protocol.lifecycle import Status
from ...volume_notation import parse_short_volume
from ..agents import status_text
from ..launch import add_socket_option, connect, env_option
from ..main import UserError
from ..output import duration, size, table
from ..projects import project_option

#: What ``connect`` runs: bash if the sandbox's view has it, else sh, interactive either way.
_SHELL = ["/bin/sh", "-c", 'exec "$(command -v bash || echo /bin/sh)" -i']
COLUMNS = ("NAME", "ID", "STATUS", "UPTIME", "EXPIRES", "MEMORY", "TEMPLATE")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sandbox", help="create, list, kill sandboxes and open a shell in one (drive them with "
                       "exec, cp, ls, expose, pause)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    c = verbs.add_parser("create", help="start a sandbox that idles until driven; prints its name")
    c.add_argument("--name", help="its name, unique in its project (default: sandbox-<12 hex>)")
    c.add_argument("-p", "--project", type=project_option, metavar="NAME", help="start it in this project")
    c.add_argument("--template", help="one of the kernel's templates (sandbox.templates)")
    c.add_argument("--memory", help="memory limit, e.g. 256Mi")
    c.add_argument("--cpu", help="CPU limit in cores, e.g. 0.5 or 500m")
    c.add_argument("--pids", type=int, help="most processes and threads")
    c.add_argument("--tmp", help="size of its private /tmp, e.g. 64Mi")
    c.add_argument("--network", action="store_true", help="share the host's network (default: only lo)")
    c.add_argument("--timeout", default="10m",
                   help="kill it after this long (default 10m; 'none': as long as the kernel runs)")
    c.add_argument("--idle-timeout", help="kill it after this long without being driven")
    c.add_argument("-e", "--env", action="append", default=[], type=env_option, metavar="NAME=VALUE",
                   help="add a variable to its environment (repeatable)")
    c.add_argument("-v", "--volume", action="append", default=[], metavar="NAME:/PATH[:OPTIONS]",
                   help="mount the named volume NAME of its project at /PATH (repeatable); OPTIONS, comma-"
                   "separated: ro (read-only), size=SIZE (the disk quota of a volume this creates, default 1Gi). "
                   "It outlives the sandbox (agentos volume ls|rm); at /workspace it is the cwd of execs and cells")
    c.add_argument("--workspace", metavar="SIZE", help="a private writable /workspace with this disk quota, "
                   "gone with the sandbox (a volume keeps one)")
    c.add_argument("--writable", action="append", default=[], metavar="PATH",
                   help="bind this host path read-write (repeatable)")
    c.add_argument("--readonly", action="append", default=[], metavar="PATH",
                   help="bind this host path read-only (repeatable)")
    c.add_argument("--allow-degraded", action="store_true",
                   help="start even if an isolation layer or limit cannot be enforced here")
    c.add_argument("--json", action="store_true", help="the kernel's answer (id, name, isolation...) as JSON")
    add_socket_option(c)
    c.set_defaults(func=run_create)

    ls = verbs.add_parser("ls", aliases=["list"], help="the sandboxes: name, id, status, uptime, expiry, memory")
    ls.add_argument("-p", "--project", type=project_option, metavar="NAME", help="only this project's")
    ls.add_argument("-a", "--all", action="store_true", help="ended ones too (the kernel's recent history)")
    ls.add_argument("--json", action="store_true", help="the kernel's records as JSON")
    add_socket_option(ls)
    ls.set_defaults(func=run_ls)

    k = verbs.add_parser("kill", aliases=["rm"], help="end sandboxes now, with everything running in them")
    k.add_argument("names", nargs="+", metavar="NAME", help="a sandbox's name (PROJECT/NAME for another project's)")
    k.add_argument("--json", action="store_true", help="their final states as JSON")
    add_socket_option(k)
    k.set_defaults(func=run_kill)

    n = verbs.add_parser("connect", help="an interactive shell in a sandbox, on this terminal (exit to leave)")
    n.add_argument("name", help="the sandbox's name")
    n.add_argument("-u", "--user", help="the sandbox's own user (default) or 'nobody'")
    n.add_argument("-w", "--workdir", help="working directory, in the sandbox's view")
    n.add_argument("-e", "--env", action="append", default=[], type=env_option, metavar="NAME=VALUE",
                   help="add a variable to the shell's environment (repeatable), as agentos exec -e")
    n.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then a program to run instead of the shell (bash if present, else sh)")
    add_socket_option(n)
    n.set_defaults(func=run_connect)


# -- create ----------------------------------------------------------------------------------

def run_create(args: argparse.Namespace) -> int:
    limits: dict[str, Any] = {key: value for key, value in
                              (("memory", args.memory), ("cpu", args.cpu), ("pids", args.pids), ("tmp", args.tmp))
                              if value is not None}
    timeout = None if args.timeout == "none" else args.timeout
    volumes = [volume_option(text, i) for i, text in enumerate(args.volume)]
    with connect(args) as client:
        sandbox = client.sandbox(args.template, name=args.name, limits=limits or None, network=args.network,
                                 timeout=timeout, idle_timeout=args.idle_timeout, env=dict(args.env),
                                 writable_paths=args.writable, readonly_paths=args.readonly,
                                 workspace=args.workspace, volumes=volumes or None,
                                 allow_degraded=args.allow_degraded, project=args.project)
        info = sandbox.start().info
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(_qualified(info))
    degraded = (info.get("isolation") or {}).get("degraded")
    if degraded:
        print(f"not enforced here: {', '.join(degraded)}", file=sys.stderr)
    return 0


def volume_option(text: str, index: int) -> dict[str, Any]:
    """``--volume NAME:/PATH[:OPTIONS]`` (``volume_notation``) as entry ``index`` of the SDK's
    ``volumes``: the kernel checks the name, path and size as for any SPAWN, naming
    ``volumes[INDEX]`` as this does."""
    where = f"volumes[{index}]"
    try:
        short = parse_short_volume(text)
    except ValueError as exc:
        raise InvalidArgument(f"{where}: --volume {exc}", field=where) from None
    volume: dict[str, Any] = {"name": short.name, "path": short.path}
    if short.read_only is not None:
        volume["read_only"] = short.read_only
    if short.size is not None:
        volume["size"] = short.size
    return volume


# -- ls --------------------------------------------------------------------------------------

def is_sandbox(info: Mapping[str, Any]) -> bool:
    """Whether an agent (a LIST row) is a sandbox: it runs the idle program."""
    return list(info.get("argv") or []) == [IDLE]


def _sandboxes(client: Any, project: str | None, everything: bool) -> list[Mapping[str, Any]]:
    rows = [info for info in client.list_agents(project=project) if is_sandbox(info)]
    return rows if everything else [info for info in rows if info["status"] in Status.LIVE]


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = _sandboxes(client, args.project, args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no sandboxes")
        return 0
    now = time.time()
    print(table(COLUMNS, [_row(info, now) for info in sorted(rows, key=lambda info: info["started_at"])]))
    return 0


def _row(info: Mapping[str, Any], now: float) -> list[str]:
    live = info["status"] in Status.LIVE
    memory = (info.get("usage") or {}).get("memory_current") if live else None
    timeout = info.get("timeout")
    expires = duration(info["started_at"] + timeout - now) if live and timeout else "-"
    return [_qualified(info), info["id"], status_text(info), duration(now - info["started_at"]) if live else "-",
            expires, size(memory) if memory is not None else "-", info.get("template") or "-"]


def _qualified(info: Mapping[str, Any]) -> str:
    return f"{info['project']}/{info['name']}" if info.get("project") else str(info["name"])


# -- kill ------------------------------------------------------------------------------------

def run_kill(args: argparse.Namespace) -> int:
    failed = 0
    ended = []
    with connect(args) as client:
        for name in args.names:
            try:
                ended.append(_kill(client, name))
            except (AgentOSError, UserError) as exc:
                print(f"agentos sandbox kill: {name}: {exc}", file=sys.stderr)
                failed = 1
    if args.json:
        print(json.dumps(ended, indent=2))
    else:
        for info in ended:
            print(f"{_qualified(info)} ({info['id']}) killed: {info['status']}")
    return failed


def _kill(client: Any, name: str) -> dict[str, Any]:
    running = [info for info in client.list_agents(name=name) if info["status"] in Status.LIVE]
    if not running:
        raise NotFound(f"no running sandbox {name!r}")
    if len(running) > 1:
        raise UserError(f"{name!r} names sandboxes of several projects: say PROJECT/NAME")
    (info,) = running
    if not is_sandbox(info):
        raise UserError(f"{name!r} is an agent, not a sandbox: `agentos kill {name}` stops it")
    result: dict[str, Any] = client.kill(id=info["id"], grace=0)
    return result


# -- connect ---------------------------------------------------------------------------------

def run_connect(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())):
        raise UserError("connect needs a terminal (stdin and stdout); without one use "
                        f"`agentos exec {args.name} -- COMMAND`")
    rows, cols = _size()
    env = {"TERM": os.environ.get("TERM") or "xterm", **dict(args.env)}
    with connect(args) as client, connect(args) as control:
        handle = client.exec_start(args.name, command or _SHELL, pty=(rows, cols), stdin_open=True,
                                   env=env, cwd=args.workdir, user=args.user)
        with _raw_terminal():
            feeder = _Feeder(control, handle["id"])
            feeder.start()
            try:
                stream = client.exec_attach(handle["id"])
                for _, data in stream:
                    os.write(sys.stdout.fileno(), data)
            finally:
                feeder.stop()
    result = stream.result
    assert result is not None
    return 128 + result.signal if result.signal is not None else int(result.exit_code or 0)


def _size() -> tuple[int, int]:
    size = os.get_terminal_size(sys.stdout.fileno())
    return max(size.lines, 1), max(size.columns, 1)


@contextlib.contextmanager
def _raw_terminal() -> Iterator[None]:
    """Our terminal in raw mode (keys go to the sandbox's terminal as typed), restored after."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class _Feeder(threading.Thread):
    """Our keystrokes to the exec's terminal and our window size to its size, over a connection
    of its own (the main one reads the output); SIGWINCH wakes it through a pipe."""

    def __init__(self, control: Any, exec_id: str) -> None:
        super().__init__(name="agentos-connect-input", daemon=True)
        self.control = control
        self.exec_id = exec_id
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._previous = signal.signal(signal.SIGWINCH, lambda *_: self._poke(b"w"))

    def _poke(self, what: bytes) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, what)

    def stop(self) -> None:
        signal.signal(signal.SIGWINCH, self._previous)
        self._poke(b"q")
        self.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        try:
            while True:
                ready, _, _ = select.select([stdin, self._wake_r], [], [])
                if self._wake_r in ready:
                    wakes = os.read(self._wake_r, 64)
                    if b"q" in wakes:
                        return
                    self.control.exec_resize(self.exec_id, *_size())
                if stdin in ready:
                    data = os.read(stdin, 65536)
                    if not data or self.control.exec_input(self.exec_id, data)["closed"]:
                        return
        except (AgentOSError, OSError):
            pass  # the shell ended, or the kernel went: the output side reports it
