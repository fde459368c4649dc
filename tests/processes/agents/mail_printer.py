"""Says READY, then prints (the start of) every message it receives, one line each, until killed.

With an argument, it first makes a HELLO every few milliseconds for that many rounds (activity
for ``idle_timeout``; a NOOP is answered by the reactor and is not), prints ``active``, then only
waits for mail.
"""
import sys
import time

import agentos

with agentos.Client() as kernel:
    kernel.ready()
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
        kernel.hello()
        time.sleep(0.02)
    print("active" if len(sys.argv) > 1 else "listening", flush=True)
    while True:
        message = kernel.recv(ack=True)
        print(f"mail {str(message['body'])[:60]}", flush=True)
