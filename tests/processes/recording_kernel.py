"""Run as a script: ``agentos kernel`` that also appends every ``agent.*`` event it publishes, as a
JSON line, to the file ``$AGENTOS_TEST_EVENTS``.

A client's SUBSCRIBE sees only what is published after it subscribed, so never what a starting
kernel publishes before it listens (``agent.lost``, ``agent.restored``); this listener is on
the kernel's own bus from the start.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from agentos.cli.commands import kernel as kernel_command
from agentos.kernel.config import KernelConfig
from agentos.kernel.daemon import Kernel


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    kernel_command.register(parser.add_subparsers())
    args = parser.parse_args(["kernel", *argv])
    kernel_command.setup_logging(args.log_level, args.log_json)
    kernel = Kernel(KernelConfig(socket_path=args.socket, state_dir=args.state_dir, log_level=args.log_level))
    path = os.environ["AGENTOS_TEST_EVENTS"]

    def record(topic: str, event: dict[str, Any]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")

    kernel.events.subscribe("agent.*", record)
    kernel.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
