"""Fill the private /tmp in 4 MiB steps until refused or killed, reporting each step.

argv[1]: a cap in MiB. Prints {"mib": N} per step, then {"refused": errno or null}.
"""
import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

cap, step = int(sys.argv[1]), 4
chunk = os.urandom(step * 1024 * 1024)
written, refused = 0, None
with open("/tmp/disk-bomb", "wb") as f:
    while written < cap:
        try:
            f.write(chunk)
            f.flush()
        except OSError as exc:
            refused = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            break
        written += step
        emit(agent="disk_bomb", mib=written)
emit(agent="disk_bomb", mib=written, refused=refused)
