"""Spawns a child agent (a sleeper) through its own kernel connection, reports its id, waits."""
import os
import sys
import time

import agentos

here = os.path.dirname(os.path.abspath(__file__))
with agentos.Client() as kernel:
    child = kernel.spawn("child-of-" + os.environ["AGENTOS_AGENT_NAME"], os.path.join(here, "sleeper.py"),
                         sandboxed=sys.argv[1] == "sandboxed")
    print(f"child {child['id']}", flush=True)
    kernel.ready()
    while True:
        time.sleep(60)
