"""Spawns one child (child.py) through its own connection, then says READY and exits."""
import os

import agentos

here = os.path.dirname(os.path.abspath(__file__))
with agentos.Client() as kernel:
    print(f"TRACEPARENT={os.environ.get('TRACEPARENT')}", flush=True)
    kernel.spawn("child-of-" + os.environ["AGENTOS_AGENT_NAME"], os.path.join(here, "child.py"))
    kernel.ready()
