"""With no capabilities, look at other agents: LIST, and LOGS of a named one.

argv[1]: the other agent's name. Prints {"listed": names LIST shows, "argv": their argv,
"logs": the other's log data or an error code}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

client = agentos.Client()
try:
    agents = client.list_agents()
    listed: list[str] | str = sorted(a["name"] for a in agents)
    argv: list[object] | None = [a.get("argv") for a in agents]
except agentos.SyscallError as exc:
    listed, argv = exc.code.value, None
try:
    logs = client.logs(sys.argv[1])
except agentos.SyscallError as exc:
    logs = exc.code.value
emit(agent="snoop", listed=listed, argv=argv, logs=logs)
