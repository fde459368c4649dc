"""Register another agent's name before it exists, then wait for its mail.

argv[1]: the name. Prints {"registered": reply or error code}, then {"got": body or null}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

client = agentos.Client()
try:
    emit(agent="squatter", registered=client.register(sys.argv[1]))
except agentos.SyscallError as exc:
    emit(agent="squatter", registered=exc.code.value)
    sys.exit(0)
try:
    message = client.recv(timeout=float(sys.argv[2]), name=sys.argv[1])
    emit(agent="squatter", got=message["body"] if message else None)
except agentos.SyscallError as exc:
    emit(agent="squatter", got=None, error=exc.code.value)
