"""Prints what reading the file ``argv[1]`` gives it (its size), or the error."""
import sys

try:
    with open(sys.argv[1], "rb") as f:
        print(f"read {len(f.read())} bytes", flush=True)
except OSError as exc:
    print(f"cannot read: {exc.strerror}", flush=True)
