"""``agentos``: the command-line entry point. Each subcommand lives in ``commands/``."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import AgentOSError

#: Subcommand modules under agentos.cli.commands, in help order.
COMMANDS = [
    "kernel",
    "validate",
    "up",
    "down",
    "purge",
    "volume",
    "ps",
    "logs",
    "kill",
    "start",
    "exec",
    "cp",
    "expose",
    "pause",
    "sandbox",
    "spawn",
    "think",
    "top",
    "dashboard",
    "mcp",
    "approvals",
    "doctor",
    "audit",
    "mail",
    "fake_gemini",
]


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentos", description="A Linux kernel for LLM agents.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"agentos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UserError, AgentOSError, OSError) as exc:
        # User mistakes and kernel answers are one line, never a traceback.
        print(f"agentos {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1


if __name__ == "__main__":
    sys.exit(main())
