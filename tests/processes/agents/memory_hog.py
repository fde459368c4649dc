"""Touches memory 8 MiB at a time until the cgroup's OOM killer stops it."""
import time

import agentos

agentos.Client().ready()
time.sleep(0.2)
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))
