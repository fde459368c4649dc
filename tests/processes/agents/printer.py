"""Prints ``count`` numbered lines to stdout and stderr alternately, then exits with ``code``."""
import sys
import time

count, code, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
for i in range(count):
    (sys.stdout if i % 2 == 0 else sys.stderr).write(f"line {i}\n")
    time.sleep(pause)
sys.exit(code)
