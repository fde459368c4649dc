"""``agentos mcp``: the kernel's sandboxes as MCP tools, over stdio or Streamable HTTP (docs/mcp.md).

It runs as a client of the kernel with this user's identity, narrowed by its options: which tools
(``--capabilities``), the limits every sandbox gets at most, whether sandboxes get the network,
and how many one MCP session may hold. Each session's sandboxes are its own and end with it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from ...manifest.schema import LOG_LEVELS
from ..launch import add_socket_option, duration_option, socket_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mcp", help="serve sandboxes as MCP tools (stdio by default; --http or --unix)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--http", metavar="HOST:PORT",
                       help="Streamable HTTP on a loopback address (port 0: a free one), behind a bearer token")
    where.add_argument("--unix", metavar="PATH", help="Streamable HTTP on a Unix socket (mode 0600), behind a token")
    p.add_argument("--token-file", metavar="FILE",
                   help="bearer tokens, one per line, each its own principal (default: $AGENTOS_MCP_TOKEN, "
                        "else one made and printed at start)")
    p.add_argument("--capabilities", default="spawn,kill", metavar="LIST",
                   help="what MCP clients may use: spawn,kill (the sandbox tools), think, state "
                        "(default spawn,kill; never more than this uid holds)")
    p.add_argument("--limits", default="memory=512Mi,pids=256", metavar="K=V,...",
                   help="every sandbox's limits, which a client may only lower: memory, cpu, pids, tmp "
                        "(default memory=512Mi,pids=256)")
    p.add_argument("--allow-network", action="store_true",
                   help="let clients give a sandbox the host's network (off: loopback only)")
    p.add_argument("--max-sandboxes", type=int, default=4, help="sandboxes one MCP session may hold (default 4)")
    p.add_argument("--idle-timeout", type=duration_option, default="10m",
                   help="a sandbox unused this long is killed, and an HTTP session ends (default 10m)")
    p.add_argument("--sandbox-timeout", type=duration_option, default="1h",
                   help="the longest a sandbox lives, enforced by the kernel (default 1h)")
    p.add_argument("--log-level", default="WARNING", choices=LOG_LEVELS)
    add_socket_option(p)
    p.set_defaults(func=run)


def parse_limits(text: str) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"--limits: expected KEY=VALUE, got {item!r}")
        limits[key.strip()] = int(value) if key.strip() == "pids" and value.isdigit() else value.strip()
    return limits


def run(args: argparse.Namespace) -> int:
    from ..main import UserError

    try:
        from ...mcp import server as mcp_server
        from ...mcp import server_http
    except ImportError as exc:
        raise UserError(f"agentos mcp needs the mcp extra (pip install 'agentos[mcp]'): {exc}") from None
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="agentos mcp: %(levelname)s %(message)s")
    try:
        policy = mcp_server.Policy(
            capabilities=frozenset(filter(None, (c.strip() for c in args.capabilities.split(",")))),
            limits=parse_limits(args.limits), allow_network=args.allow_network, max_sandboxes=args.max_sandboxes,
            idle_timeout=args.idle_timeout, sandbox_timeout=args.sandbox_timeout)
        listen = None
        if args.http is not None:
            listen = server_http.parse_http(args.http)
        elif args.unix is not None:
            listen = server_http.Listen(path=args.unix)
        tokens, made = server_http.load_tokens(args.token_file) if listen is not None else ({}, False)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    def ready(url: str) -> None:
        # The line a user (or a test) reads; a token made here is in it and nowhere else.
        token = f" (Authorization: Bearer {next(iter(tokens))})" if made else ""
        print(f"agentos mcp: {url}{token}", flush=True)

    async def main() -> None:
        async with mcp_server.running(socket_path(args.socket), policy) as server:
            if listen is not None:
                await server_http.serve(server, listen, tokens, ready)
                return
            from mcp.server.stdio import stdio_server

            task = asyncio.current_task()
            assert task is not None
            # A client that stops us with SIGTERM still gets its sandboxes killed on the way out.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            async with stdio_server() as (read, write):
                await server.mcp.run(read, write, server.mcp.create_initialization_options())

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return 0
