"""The agent the spawn benchmarks start: import the SDK, say ready on fd $READY_FD (default 3), idle.

What an agent does before it can work: its imports. Then it stays alive (idle) until
killed, so its memory can be measured. The ready message is "r" and this thread's CPU
time in nanoseconds, which counts everything since the fork (exec does not reset it).
"""
import os
import signal
import time

import agentos  # noqa: F401  (the SDK import is what a fresh interpreter pays for)

os.write(int(os.environ.get("READY_FD", "3")), b"r%d" % time.thread_time_ns())
while True:
    signal.pause()
