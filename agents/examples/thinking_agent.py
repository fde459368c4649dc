"""An interactive agent that thinks through the kernel: type a line, watch the answer stream.

Run it with a kernel up (``agentos kernel``) and a model configured: a real key
(``GEMINI_API_KEY`` in the kernel's environment) or the offline fake
(``agentos fake-gemini``, then start the kernel with the two variables it prints).

The conversation lives in a kernel-held context, so it survives this process and
even a kernel restart. Commands: ``/clear``, ``/fork NAME``, ``/usage``, ``/quit``.
Lines that are not a terminal (a pipe) work too, which is how the test drives it.
"""
from __future__ import annotations

import argparse
import sys

import agentos
from agentos.errors import AlreadyExists


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", default="thinking-agent", help="kernel context to continue")
    parser.add_argument("--system", default="You are a helpful, concise assistant.",
                        help="system instruction for a new context")
    args = parser.parse_args()
    with agentos.Client() as kernel:
        try:
            kernel.context("create", args.context, system=args.system)
        except AlreadyExists:
            turns = kernel.context("get", args.context)["turns"]
            print(f"(continuing context {args.context!r}: {turns} turns so far)", flush=True)
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/quit":
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                command(kernel, args.context, line)
                continue
            stream = kernel.think_stream(line, context=args.context)
            print("model> ", end="", flush=True)
            for piece in stream:
                print(piece, end="", flush=True)
            reply = stream.reply
            if reply is None or not reply.success:
                error = reply.error if reply else {"type": "unknown", "message": "no answer"}
                print(f"[error {error['type']}: {error['message']}]", flush=True)
            else:
                print(f"  [{reply.tokens['total']} tokens]", flush=True)


def command(kernel: agentos.Client, context: str, line: str) -> None:
    name, _, arg = line.partition(" ")
    if name == "/clear":
        kernel.context("clear", context)
        print("(context cleared)", flush=True)
    elif name == "/fork" and arg:
        print(f"(forked into {kernel.context('fork', context, new_id=arg.strip())['id']!r})", flush=True)
    elif name == "/usage":
        usage = kernel.usage()
        mine = usage["agents"][usage["you"]]
        print(f"(calls {mine['calls']}, tokens {mine['tokens']['total']}, model {usage['model']})",
              flush=True)
    else:
        print("(commands: /clear, /fork NAME, /usage, /quit)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
