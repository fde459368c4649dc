"""Spawns children from its node: ``kid`` as it is placed (no placement of its own) with the
defaults, then ``loose`` asking for more memory than it holds; prints what each SPAWN answered as
one JSON line, says READY, and sleeps until killed."""
import json
import sys
import time

import agentos

with agentos.Client() as client:
    outcomes = {}
    kid = client.spawn("kid", sys.argv[1])
    outcomes["kid"] = {"node": kid["node"], "pid": kid["pid"]}
    try:
        client.spawn("loose", sys.argv[1], limits={"memory": "1Gi"})
        outcomes["loose"] = "spawned"
    except agentos.AgentOSError as exc:
        outcomes["loose"] = f"{type(exc).__name__}: {exc.details.get('field')}"
    print(json.dumps(outcomes), flush=True)
    client.ready()
    while True:
        time.sleep(60)
