"""Spawns a child agent (a sleeper) through its own kernel connection, reports its id, waits.

The child is sandboxed whatever the parent is: only an admin starts unsandboxed agents.
"""
import os
import time

import agentos

here = os.path.dirname(os.path.abspath(__file__))
with agentos.Client() as kernel:
    child = kernel.spawn("child-of-" + os.environ["AGENTOS_AGENT_NAME"], os.path.join(here, "sleeper.py"))
    print(f"child {child['id']}", flush=True)
    kernel.ready()
    while True:
        time.sleep(60)
