"""A bystander agent: prints a secret line, says READY, then waits for mail or sleeps.

argv[1]: the secret line. argv[2] (optional): seconds to wait for one message, then print it.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

client = agentos.Client()
print(sys.argv[1], flush=True)
client.ready()
if len(sys.argv) > 2:
    try:
        message = client.recv(timeout=float(sys.argv[2]))
        emit(agent="victim", got=message["body"] if message else None)
    except agentos.SyscallError as exc:
        emit(agent="victim", got=None, error=exc.code.value)
else:
    time.sleep(3600)
