"""Ask the kernel for a child looser than this agent, one field at a time.

argv[1]: JSON {"host_dir": a host dir outside this agent's view, "host_script": a script there}.
The agent holds only ``spawn``, runs sandboxed without network under a pids limit.
Prints {"outcomes": {field: "spawned" | error code, ...}, "refusals": {field: [message, details]}}.
"""
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

host = json.loads(sys.argv[1])
TRUE = ["/bin/true"]
ATTEMPTS: dict[str, dict[str, Any]] = {
    "sandboxed": {"command": TRUE, "sandboxed": False},
    "network": {"command": TRUE, "network": True},
    "readonly_paths": {"command": TRUE, "readonly_paths": [host["host_dir"]]},
    "writable_paths": {"command": TRUE, "writable_paths": [host["host_dir"]]},
    "script": {"script": host["host_script"]},
    "cwd": {"command": TRUE, "cwd": host["host_dir"]},
    "limits": {"command": TRUE, "limits": {"pids": 100000, "memory": "64Gi"}},
    "capabilities": {"command": TRUE, "capabilities": ["admin"]},
}
client = agentos.Client()
outcomes, refusals = {}, {}
for index, (field, options) in enumerate(ATTEMPTS.items()):
    try:
        client.spawn(f"wider-{index}", **options)
        outcomes[field] = "spawned"
    except agentos.SyscallError as exc:
        outcomes[field], refusals[field] = exc.code.value, [exc.message, exc.details]
emit(agent="spawn_widening", outcomes=outcomes, refusals=refusals)
