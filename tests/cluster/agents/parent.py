"""Spawns children from its node: ``kid`` as it is placed (no placement of its own) with the
defaults, then ``loose`` asking for more memory than it holds, ``elsewhere`` for another node
pool and ``gpu`` for a GPU it does not hold; prints what each SPAWN answered as
one JSON line, says READY, and sleeps until killed."""
import json
import sys
import time

import agentos

with agentos.Client() as client:
    outcomes: dict[str, object] = {}
    kid = client.spawn("kid", sys.argv[1])
    outcomes["kid"] = {"node": kid["node"], "pid": kid["pid"]}
    for name, options in (("loose", {"limits": {"memory": "1Gi"}}),
                          ("elsewhere", {"placement": {"labels": {"pool": "gateway"}}}),
                          ("gpu", {"placement": {"labels": {"pool": "agents"}, "gpus": 1}})):
        try:
            client.spawn(name, sys.argv[1], **options)
            outcomes[name] = "spawned"
        except agentos.SyscallError as exc:
            outcomes[name] = f"{type(exc).__name__}: {exc.details.get('field')}"
    print(json.dumps(outcomes), flush=True)
    client.ready()
    while True:
        time.sleep(60)
