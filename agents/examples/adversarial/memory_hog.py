"""Touch memory in 8 MiB steps until refused or killed (the memory limit), reporting as it goes.

Usage: memory_hog.py [MAX_MIB]  (default 65536)
Prints {"agent": "memory_hog", "mib": N} after each step, then {"refused": "MemoryError"}
if an allocation failed instead of the OOM killer ending the process.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, ready

STEP = 8
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 65536
ready()
chunks = []
try:
    while len(chunks) * STEP < limit:
        chunk = bytearray(STEP * 1024 * 1024)
        chunk[::4096] = b"\1" * len(chunk[::4096])  # touch every page: resident, not just reserved
        chunks.append(chunk)
        emit(agent="memory_hog", mib=len(chunks) * STEP)
except MemoryError:
    chunks.clear()
    emit(agent="memory_hog", mib=None, refused="MemoryError")
else:
    emit(agent="memory_hog", mib=len(chunks) * STEP, refused=None)
