"""Prints ``count`` numbered lines, a pause apart, then exits 3."""
import sys
import time

for i in range(int(sys.argv[1])):
    print(f"line {i}", flush=True)
    time.sleep(float(sys.argv[2]))
sys.exit(3)
