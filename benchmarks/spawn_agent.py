"""The agent the spawn benchmarks start: import the SDK, say ready on fd $READY_FD (default 3), idle.

What an agent does before it can work: its imports. Then it stays alive (idle) until
killed, so its memory can be measured.
"""
import os
import signal

import agentos  # noqa: F401  (the SDK import is what a fresh interpreter pays for)

os.write(int(os.environ.get("READY_FD", "3")), b"r")
while True:
    signal.pause()
