"""Exec into agents that are not this one's to enter, and into those that are.

argv[1]: JSON {"sibling": the name of an agent spawned by someone else}.
The agent holds ``spawn`` (and ``observe``, which must not be enough). Prints
{"outcomes": {target: "ran" | error code}, "child_output": what ran in its own child}.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

targets = json.loads(sys.argv[1])
client = agentos.Client()
child = client.spawn("exec-attack-child", command=["/bin/sleep", "100000"])
outcomes: dict[str, object] = {}
child_output = None
for label, target in (("sibling", targets["sibling"]), ("self", os.environ["AGENTOS_AGENT_NAME"]),
                      ("child", child["name"])):
    try:
        result = client.exec(target, ["/bin/sh", "-c", "echo ran in $(hostname)"])
        outcomes[label] = "ran"
        if label == "child":
            child_output = result.stdout.decode()
    except agentos.SyscallError as exc:
        outcomes[label] = exc.code.value
# Handles of others' execs are not reachable either.
try:
    client.exec_signal(targets["exec"], "KILL")
    outcomes["sibling exec"] = "signalled"
except agentos.SyscallError as exc:
    outcomes["sibling exec"] = exc.code.value
outcomes["listed"] = sorted({ex["name"] for ex in client.exec_list()})
emit(agent="exec_attack", outcomes=outcomes, child_output=child_output)
