"""``agentos think "prompt"``: ask the kernel's LLM gateway, print the answer.

``--count`` prints what the prompt would cost as input instead, and ``--list-models``
the models the kernel's provider serves (a table, or ``--json``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ...client.think import ModelList, ThinkError
from ..launch import add_socket_option, connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("think", help="send a prompt through the kernel's LLM gateway")
    p.add_argument("prompt", nargs="?", help="what to ask")
    p.add_argument("--system", help="system instruction")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--model", help="model id (if the kernel allows overriding it)")
    p.add_argument("--no-stream", action="store_true", help="print the answer only once it is complete")
    p.add_argument("--count", action="store_true",
                   help="print the prompt's input tokens (with --system, on --model) instead of asking")
    p.add_argument("--list-models", action="store_true",
                   help="list the models the kernel's provider serves and which you may use")
    p.add_argument("--json", action="store_true", help="with --list-models or --count: print JSON")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_models:
        return _list_models(args)
    if args.prompt is None:
        print("agentos think: a prompt is needed (or --list-models)", file=sys.stderr)
        return 2
    options = {key: value for key, value in (("system", args.system), ("temperature", args.temperature),
                                             ("model", args.model)) if value is not None}
    if args.count:
        return _count(args, options)
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


def _count(args: argparse.Namespace, options: dict[str, Any]) -> int:
    try:
        with connect(args) as client:
            counted = client.count_tokens(args.prompt, **options)
    except ThinkError as error:
        print(f"agentos think: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(counted)) if args.json else f"{counted.tokens} tokens ({counted.model})")
    return 0


def _list_models(args: argparse.Namespace) -> int:
    try:
        with connect(args) as client:
            listed = client.models()
    except ThinkError as error:
        print(f"agentos think: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(listed), indent=2))
    else:
        print(models_table(listed))
    return 0


def models_table(listed: ModelList) -> str:
    """One row per model: ``*`` marks a kernel default, ``yes`` whether you may use it."""
    defaults = {listed.default, listed.embedding_default}
    rows = [("  MODEL", "INPUT", "OUTPUT", "ALLOWED", "METHODS")]
    for m in listed.models:
        rows.append((("* " if m.name in defaults else "  ") + m.name, _limit(m.input_token_limit),
                     _limit(m.output_token_limit), "yes" if m.allowed else "no", ",".join(m.methods)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def _limit(tokens: int | None) -> str:
    return "-" if tokens is None else f"{tokens:,}"
