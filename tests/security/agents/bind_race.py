"""Swap a directory the kernel has checked for a symlink while its child's SPAWN is under way.

argv[1]: JSON {"checked": a dir in this agent's writable path, "secret": a host dir outside its
view, "signals": a dir in its writable path where the test and this agent leave files for each
other}. With argv[1] "child" it is the child instead, and prints what it sees at argv[2].

The agent prints {"stage": "ready"}, waits for "zygote-stopped" (the test holds the zygote, so
the SPAWN stops once checked), asks for a child with ``checked`` read-only, and meanwhile a
thread waits for "go" (the SPAWN was checked and handed to the stopped zygote), renames
``checked`` aside, puts a symlink to ``secret`` in its place and leaves "swapped".
Prints {"spawn": "spawned" | error code, "message": ..., "child": its output if it ran}.
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

if sys.argv[1] == "child":
    try:
        seen: dict[str, str] | str = {name: open(os.path.join(sys.argv[2], name)).read()
                                      for name in sorted(os.listdir(sys.argv[2]))}
    except OSError as exc:
        seen = str(exc)
    emit(child_saw=seen)
    sys.exit(0)

config = json.loads(sys.argv[1])
checked, signals = config["checked"], config["signals"]


def wait_for(name):
    while not os.path.exists(os.path.join(signals, name)):
        time.sleep(0.01)


def swap():
    wait_for("go")
    os.rename(checked, checked + ".was")
    os.symlink(config["secret"], checked)
    open(os.path.join(signals, "swapped"), "w").close()


client = agentos.Client()
emit(stage="ready")
wait_for("zygote-stopped")
threading.Thread(target=swap, daemon=True).start()
try:
    child = client.spawn("race-child", os.path.abspath(__file__), args=["child", checked], readonly_paths=[checked])
except agentos.SyscallError as exc:
    emit(agent="bind_race", spawn=exc.code.value, message=exc.message)
else:
    client.wait(id=child["id"], timeout=60)
    emit(agent="bind_race", spawn="spawned", child=client.logs(id=child["id"]))
