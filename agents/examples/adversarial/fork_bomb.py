"""Fork until the kernel refuses (the pids limit), then report how far it got.

Usage: fork_bomb.py [MAX]  (default 100000; a bound so a host without limits survives it)
Prints {"agent": "fork_bomb", "children": N, "refused": "EAGAIN" | null} and keeps the
children alive until killed, so the limit stays reached while someone checks it.
"""
import errno
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, ready

limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ready()
children, refused = 0, None
while children < limit:
    try:
        pid = os.fork()
    except OSError as exc:
        refused = errno.errorcode.get(exc.errno, str(exc.errno))
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    children += 1
emit(agent="fork_bomb", children=children, refused=refused)
while True:
    time.sleep(3600)
