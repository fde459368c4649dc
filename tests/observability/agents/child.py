"""Prints the trace context it was started with, says HELLO and READY, and exits."""
import os

import agentos

with agentos.Client() as kernel:
    print(f"TRACEPARENT={os.environ.get('TRACEPARENT')}", flush=True)
    kernel.hello()
    kernel.ready()
