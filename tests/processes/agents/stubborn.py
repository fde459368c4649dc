"""Ignores SIGTERM, as does the grandchild it forks; prints both pids; only SIGKILL ends it."""
import os
import signal
import time

import agentos

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    while True:
        time.sleep(60)
print(f"pids {os.getpid()} {child}", flush=True)
agentos.Client().ready()
while True:
    time.sleep(60)
