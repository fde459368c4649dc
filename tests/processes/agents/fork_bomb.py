"""Forks until the kernel refuses, reports how many children it got, then keeps them alive."""
import os
import time

import agentos

children = 0
while children < 10_000:
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"fork refused after {children} children: {exc}", flush=True)
        break
    if pid == 0:
        while True:
            time.sleep(60)
    children += 1
print(f"children {children}", flush=True)
agentos.Client().ready()
while True:
    time.sleep(60)
