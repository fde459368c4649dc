"""Thinks ``count`` times through the kernel (its budget is its SPAWN's), then exits."""
import sys

import agentos

with agentos.Client() as kernel:
    for i in range(int(sys.argv[1])):
        kernel.think(prompt=f"Step {i}: say something short.").raise_for_error()
