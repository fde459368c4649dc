"""Connect to the kernel's socket by path (it is in this agent's view) and act as the admin.

argv[1]: the socket path. Prints {"connect": "ok" | why not, "you": HELLO's "you",
"unsandboxed spawn": "spawned" | error code}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

report = {"agent": "socket_by_path", "own_id": os.environ.get("AGENTOS_AGENT_ID")}
try:
    client = agentos.Client(sys.argv[1])
except agentos.KernelNotRunning as exc:
    report["connect"] = str(exc)
else:
    report["connect"] = "ok"
    report["you"] = client.hello()["you"]
    try:
        client.spawn("host-shell", command=["/bin/true"], sandboxed=False)
        report["unsandboxed spawn"] = "spawned"
    except agentos.SyscallError as exc:
        report["unsandboxed spawn"] = exc.code.value
emit(**report)
