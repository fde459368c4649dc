"""Asks the model once, says READY, and waits to be killed."""
import time

import agentos

with agentos.Client() as kernel:
    kernel.think("hello").raise_for_error()
    kernel.ready()
    time.sleep(600)
