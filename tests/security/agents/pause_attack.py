"""Try to pause, resume and outlive what this agent does not own.

argv[1]: JSON {"sibling": id of an agent the admin started beside this one}.
argv[2] (optional): "child", with argv[3] the id of this agent's parent: run as the child,
attack the parent, then idle until killed.
The agent holds ``spawn`` and ``kill`` (its child the same, as far as it gets them).
Prints {"outcomes": {attempt: "ok" | error code}, "child": {...}, "child_timeout": seconds}.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

client = agentos.Client()
me = os.environ["AGENTOS_AGENT_ID"]


def attempt(fn):
    try:
        fn()
        return "ok"
    except agentos.SyscallError as exc:
        return exc.code.value


if len(sys.argv) > 2 and sys.argv[2] == "child":
    parent = sys.argv[3]
    emit(role="child", outcomes={
        "pause the parent": attempt(lambda: client.pause(id=parent)),
        "resume the parent": attempt(lambda: client.resume(id=parent)),
        "pause itself": attempt(lambda: client.pause(id=me)),
    })
    client.ready()
    while True:
        time.sleep(60)

sibling = json.loads(sys.argv[1])["sibling"]
outcomes = {
    "pause the sibling by id": attempt(lambda: client.pause(id=sibling)),
    "resume the sibling": attempt(lambda: client.resume(id=sibling)),
    "pause itself": attempt(lambda: client.pause(id=me)),
    "spawn a child with a longer timeout": attempt(lambda: client.spawn(
        "too-long", command=["/bin/sleep", "1000"], timeout="1h")),
}
child = client.spawn("pause-attack-child", __file__, args=[sys.argv[1], "child", me],
                     capabilities=["kill"])
client.wait(id=child["id"], until="ready", timeout=60)
outcomes["pause its child"] = attempt(lambda: client.pause(id=child["id"]))
[listed] = [a for a in client.list_agents() if a["id"] == child["id"]]
outcomes["its child shows paused"] = listed["status"]
outcomes["resume its child"] = attempt(lambda: client.resume(id=child["id"]))
child_report = [json.loads(line) for line in client.logs(id=child["id"]).splitlines() if line.startswith("{")]
emit(agent="pause_attack", outcomes=outcomes, child=child_report[-1] if child_report else None,
     child_id=child["id"], child_timeout=child["timeout"])
client.ready()
while True:
    time.sleep(60)
