"""Projects under attack: an agent of one project against another project's agents and data.

argv[1] is the role:
- ``victim``: registers ``inbox``, stores ``k``, prints {"ready": true}, then idles until killed.
- ``courier``: sends to ``inbox`` and prints {"to": the mailbox it went to}.
- ``attacker``: is itself named ``runner``, like the victim; tries to kill, observe, capture the
  mail of, read the state of, purge and escape into the victim's project (argv[2]); prints
  {"outcomes": {attempt: "ok" | error code}, "list": [project/name it sees], "to": {...}}.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos
from agentos.protocol import Op

client = agentos.Client()
role = sys.argv[1]


def attempt(fn):
    try:
        fn()
        return "ok"
    except agentos.SyscallError as exc:
        return exc.code.value


if role == "victim":
    client.register("inbox")
    client.store("k", "victim's")
    emit(ready=True)
    while True:
        time.sleep(60)
elif role == "courier":
    emit(to=client._call(Op.SEND, {"to": "inbox", "body": "for the victim"})["to"])
else:
    victim = sys.argv[2]
    here = os.path.dirname(os.path.abspath(__file__))
    outcomes = {
        "kill the victim by project/name": attempt(lambda: client.kill(f"{victim}/runner", grace=0)),
        "kill 'runner' (its own name)": attempt(lambda: client.kill("runner", grace=0)),
        "logs of the victim": attempt(lambda: client.logs(f"{victim}/runner")),
        "wait for the victim": attempt(lambda: client.wait(f"{victim}/runner", timeout=0.01)),
        "pause the victim": attempt(lambda: client.pause(f"{victim}/runner")),
        "register 'runner'": attempt(lambda: client.register("runner")),
        "register 'inbox' (in its own project)": attempt(lambda: client.register("inbox")),
        "read the victim's state": attempt(lambda: client.fetch("k", agent=f"{victim}/runner")),
        "purge the victim's project": attempt(lambda: client.purge(victim)),
        "purge its own project": attempt(lambda: client.purge("red")),
        "spawn a child into the victim's project": attempt(lambda: client.spawn(
            "mole", os.path.join(here, "project_attack.py"), args=["courier"], project=victim)),
        "list the victim's project": attempt(lambda: client.list_agents(project=victim)),
    }
    seen = sorted(f"{a['project']}/{a['name']}" for a in client.list_agents())
    emit(outcomes=outcomes, list=seen, own=client.list_agents(project=victim))
