"""Hold memory, then spawn a child that takes all the memory it may (its own limit as large as
this agent's): the child's pages are charged to this agent's cgroup too, so the two together
stay under this agent's limit (the OOM killer takes the biggest of them).

argv[1]: JSON {"held_mib": what this agent holds, "limit": the child's memory limit, "hog": the
memory hog script}. Prints {"held_mib", "child": its id}, then stays up until killed.
"""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

task = json.loads(sys.argv[1])
held = bytearray(task["held_mib"] << 20)
held[::4096] = b"\1" * len(held[::4096])  # resident, not just reserved
child = agentos.Client().spawn("memory-child", task["hog"], args=["4096"], limits={"memory": task["limit"]})
emit(held_mib=task["held_mib"], child=child["id"])
signal.pause()
