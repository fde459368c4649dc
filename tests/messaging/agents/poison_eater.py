"""A worker that crashes on a poison message, as a code runner does on code that kills it.

It reads its mailbox, dies (exit 3, before ACK) on the body ``"poison"``, reports every
other body to the registered name ``results`` with its delivery count and ACKs it, and
exits 0 on ``"stop"``.
"""
from __future__ import annotations

import os

import agentos


def main() -> int:
    with agentos.Client() as kernel:
        while True:
            message = kernel.recv(timeout=120)
            if message["body"] == "poison":
                os._exit(3)
            if message["body"] == "stop":
                kernel.ack(message["id"])
                return 0
            kernel.send("results", {"handled": message["body"], "deliveries": message["deliveries"]})
            kernel.ack(message["id"])


if __name__ == "__main__":
    raise SystemExit(main())
