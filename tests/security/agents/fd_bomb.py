"""Open files until refused, raising the soft limit to the hard one first.

argv[1]: a cap on the count, so a host without limits survives. Prints {"opened": N, "refused": errno}.
"""
import errno
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

cap = int(sys.argv[1])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds: list[int] = []
refused = None
while len(fds) < cap:
    try:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        refused = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        break
emit(agent="fd_bomb", opened=len(fds), refused=refused, hard_limit=hard)
