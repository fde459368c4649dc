"""``agentos think "prompt"``: ask the kernel's LLM gateway, print the answer."""
from __future__ import annotations

import argparse
import sys

from ..launch import add_socket_option, connect


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("think", help="send a prompt through the kernel's LLM gateway")
    p.add_argument("prompt", help="what to ask")
    p.add_argument("--system", help="system instruction")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--model", help="model id (if the kernel allows overriding it)")
    p.add_argument("--no-stream", action="store_true", help="print the answer only once it is complete")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = {key: value for key, value in (("system", args.system), ("temperature", args.temperature),
                                             ("model", args.model)) if value is not None}
    with connect(args) as client:
        if args.no_stream:
            reply = client.think(args.prompt, **options)
            if reply.success:
                print(reply.content or "")
        else:
            stream = client.think_stream(args.prompt, **options)
            for text in stream:
                sys.stdout.write(text)
                sys.stdout.flush()
            reply = stream.reply  # type: ignore[assignment]
            if reply is not None and reply.success:
                print()
    if reply is None or not reply.success:
        error = (reply.error if reply is not None else None) or {"type": "unknown", "message": "no answer"}
        print(f"agentos think: error: {error.get('type')}: {error.get('message')}", file=sys.stderr)
        return 1
    return 0
