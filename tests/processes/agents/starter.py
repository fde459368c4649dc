"""START from inside an agent. ``starter.py own``: spawn a sleeper child, kill it, START it again
and print ``started <true|false> <new id> <parent>``. ``starter.py other NAME``: try to START
NAME (a sibling's child) and print the error code; both then wait to be killed."""
import os
import sys
import time

import agentos

here = os.path.dirname(os.path.abspath(__file__))
with agentos.Client() as kernel:
    if sys.argv[1] == "own":
        name = "kid-of-" + os.environ["AGENTOS_AGENT_NAME"]
        kernel.spawn(name, os.path.join(here, "sleeper.py"))
        kernel.kill(name, grace=5)
        again = kernel.start(name)
        print(f"started {str(again['started']).lower()} {again['id']} {again['parent']}", flush=True)
    else:
        try:
            kernel.start(sys.argv[2])
            print("started", flush=True)
        except agentos.AgentOSError as exc:
            print(f"refused {exc.code.value}", flush=True)  # type: ignore[attr-defined]
    while True:
        time.sleep(60)
