"""Try to get more disk than this agent's workspace holds: bigger children, more children, then
filling it past its size; and to take the quota off (remount, mount over it).

argv[1]: JSON {"children": [SPAWN payloads], "cap_mib": a cap on the filling}. Children it
starts stay up until the end (their room in this workspace still counts), then are killed.
Prints {"children": [{"ok"} | {"code", "field"}], "cwd", "uid", "owner", "total", "mib",
"refused", "tmp_ok", "outcomes": {attempt: "ok" | errno name}}.
"""
import ctypes
import errno
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, outcome

import agentos
from agentos.protocol import Op

task = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype, flags, data=None):
    def attempt():
        if libc.mount(source, target, fstype, ctypes.c_ulong(flags), data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return attempt


MS_REMOUNT, MS_BIND = 32, 4096
client = agentos.Client()
children: list[dict[str, object]] = []
started = []
for payload in task["children"]:
    try:
        started.append(client._call(Op.SPAWN, payload)["id"])
        children.append({"ok": True})
    except agentos.SyscallError as exc:
        children.append({"ok": False, "code": exc.code.value, "field": exc.details.get("field")})

outcomes = {
    "remount /workspace": outcome(mount(None, b"/workspace", None, MS_REMOUNT | MS_BIND)),
    "tmpfs over /workspace": outcome(mount(b"tmpfs", b"/workspace", b"tmpfs", 0, b"size=1g")),
}
info = os.statvfs("/workspace")
report = {"cwd": os.getcwd(), "uid": os.getuid(), "owner": os.stat("/workspace").st_uid,
          "total": info.f_blocks * info.f_frsize, "refused": None}
chunk, written = os.urandom(1 << 20), 0
fd = os.open("/workspace/fill", os.O_WRONLY | os.O_CREAT, 0o600)
while written < task["cap_mib"] << 20:
    try:
        written += os.write(fd, chunk)
    except OSError as exc:
        report["refused"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        break
os.close(fd)
with open("/tmp/after", "wb") as f:
    f.write(os.urandom(4 << 20))
for child in started:
    client.kill(id=child, grace=0)
emit(agent="workspace_attack", children=children, mib=written / (1 << 20), outcomes=outcomes,
     tmp_ok=os.path.getsize("/tmp/after") == 4 << 20, **report)
