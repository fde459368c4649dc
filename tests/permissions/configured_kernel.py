"""Run as a script: a kernel whose config sections come from a JSON file.

``python configured_kernel.py SECTIONS.json --socket S --state-dir D [...]`` takes
the same options as ``agentos kernel``; the sections are what a manifest's
``kernel:`` block would pass through (``egress``, ``permissions`` ...).
"""
from __future__ import annotations

import argparse
import json
import sys

from agentos.cli.commands import kernel as kernel_command
from agentos.kernel.config import KernelConfig
from agentos.kernel.daemon import Kernel


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        sections = json.load(f)
    parser = argparse.ArgumentParser()
    kernel_command.register(parser.add_subparsers())
    args = parser.parse_args(["kernel", *argv[1:]])
    kernel_command.setup_logging(args.log_level, args.log_json)
    config = KernelConfig(socket_path=args.socket, state_dir=args.state_dir,
                          socket_mode=args.socket_mode, log_level=args.log_level, sections=sections)
    Kernel(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
