"""Tries each SPAWN payload in argv[1] (a JSON list) from inside an agent; prints one verdict line.

Each verdict is ``{"ok": true, "info": <spawn reply>}`` or ``{"ok": false, "code", "message",
"details"}``. The children it starts keep running until every payload was tried (so what they
hold, such as a workspace's room, still counts), and are killed before it reports.
"""
import json
import sys

import agentos
from agentos.errors import SyscallError
from agentos.protocol import Op

verdicts, children = [], []
with agentos.Client() as kernel:
    for payload in json.loads(sys.argv[1]):
        try:
            info = kernel._call(Op.SPAWN, payload)
        except SyscallError as exc:
            verdicts.append({"ok": False, "code": exc.code.value, "message": exc.message,
                             "details": exc.details})
        else:
            verdicts.append({"ok": True, "info": info})
            children.append(info["id"])
    for child in children:
        kernel.kill(id=child, grace=0)
print("VERDICTS " + json.dumps(verdicts), flush=True)
