"""Fill /workspace until refused, write to /tmp after that, report, then wait to be killed.

argv[1]: a cap in MiB (so a missing quota ends the test instead of the disk).
Prints one line ``WORKSPACE {json}``: cwd, uid, the owner of /workspace, its size as statvfs
says, the MiB written before the refusal, the refusal's errno name, and whether /tmp took
4 MiB afterwards.
"""
import errno
import json
import os
import sys
import time

cap = int(sys.argv[1])
info = os.statvfs("/workspace")
report = {"cwd": os.getcwd(), "uid": os.getuid(), "owner": os.stat("/workspace").st_uid,
          "total": info.f_blocks * info.f_frsize, "mib": 0, "refused": None}
chunk, written = os.urandom(1 << 20), 0
fd = os.open("/workspace/fill", os.O_WRONLY | os.O_CREAT, 0o600)
while written < cap << 20:
    try:
        written += os.write(fd, chunk)
    except OSError as exc:
        report["refused"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        break
os.close(fd)
report["mib"] = written / (1 << 20)
with open("/tmp/after", "wb") as f:
    f.write(os.urandom(4 << 20))
report["tmp_ok"] = os.path.getsize("/tmp/after") == 4 << 20
print("WORKSPACE " + json.dumps(report), flush=True)
time.sleep(600)
