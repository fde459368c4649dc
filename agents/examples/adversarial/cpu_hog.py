"""Spin on the CPU for a while and report how much CPU time it actually got (the cpu limit).

Usage: cpu_hog.py [SECONDS]  (wall-clock seconds to spin, default 2)
Prints {"agent": "cpu_hog", "wall_s": W, "cpu_s": C, "share": C / W}; a limit of half a
core shows a share near 0.5.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, ready

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
ready()
start_wall, start_cpu = time.monotonic(), time.process_time()
while time.monotonic() - start_wall < seconds:
    pass
wall, cpu = time.monotonic() - start_wall, time.process_time() - start_cpu
emit(agent="cpu_hog", wall_s=round(wall, 3), cpu_s=round(cpu, 3), share=round(cpu / wall, 3))
