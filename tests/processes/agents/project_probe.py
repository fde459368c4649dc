"""Runs the steps in argv[1] (JSON) against the kernel, one output line each, then ``done``, then waits.

Each step is ``[op, *args]``: ``store K V``, ``fetch K``, ``send TO BODY`` (prints the mailbox),
``register NAME``, ``kill NAME``, ``logs NAME``, ``list`` (qualified names it sees),
``spawn NAME PROJECT|null``, ``purge PROJECT``. A refused step prints its error code.
"""
import json
import os
import sys
import time

import agentos
from agentos.protocol import Op

here = os.path.dirname(os.path.abspath(__file__))
with agentos.Client() as kernel:
    for i, (op, *args) in enumerate(json.loads(sys.argv[1])):
        try:
            if op == "store":
                result: object = kernel.store(args[0], args[1])
            elif op == "fetch":
                result = kernel.fetch(args[0])
            elif op == "send":
                result = kernel._call(Op.SEND, {"to": args[0], "body": args[1]})["to"]
            elif op == "register":
                result = kernel.register(args[0])["scope"]
            elif op == "kill":
                result = kernel.kill(args[0], grace=1)["status"]
            elif op == "logs":
                result = kernel.logs(args[0])
            elif op == "list":
                result = sorted(f"{a['project']}/{a['name']}" for a in kernel.list_agents())
            elif op == "spawn":
                result = kernel.spawn(args[0], os.path.join(here, "sleeper.py"), project=args[1])["project"]
            elif op == "purge":
                result = kernel.purge(args[0])
            else:
                raise SystemExit(f"unknown step {op}")
        except agentos.AgentOSError as exc:
            result = f"error {getattr(getattr(exc, 'code', None), 'value', type(exc).__name__)}"
        print(f"step {i} {json.dumps(result)}", flush=True)
    print("done", flush=True)
    while True:
        time.sleep(60)
