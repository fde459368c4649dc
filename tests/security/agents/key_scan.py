"""Look for the kernel's API key everywhere this agent can read: its environment block, its
command line, its memory, every visible process's, and the files of its view's writable places.

The agent does not know the key; it knows its shape (AOSK- and 32 hex digits) and reports
every match. Prints {"found": {where: [matches]}}.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

SHAPE = re.compile(rb"AOS" + rb"K-[0-9a-f]{32}")  # split so this file's text never matches
found: dict[str, list[str]] = {}


def scan(where, data):
    matches = {m.decode() for m in SHAPE.findall(data)}
    if matches:
        found[where] = sorted(matches.union(found.get(where, [])))


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


CHUNK = 8 << 20


def scan_memory(pid):
    """Every writable mapping of the process (where an inherited environment or heap lives),
    read in chunks that overlap by a match's length."""
    try:
        maps = read(f"/proc/{pid}/maps").decode().splitlines()
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("rw"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                for offset in range(start, end, CHUNK):
                    try:
                        mem.seek(max(start, offset - 64))
                        scan(f"memory of {pid}", mem.read(min(CHUNK + 64, end - offset)))
                    except OSError:
                        break
    except OSError:
        pass


for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
    for part in ("environ", "cmdline"):
        scan(f"/proc/{pid}/{part}", read(f"/proc/{pid}/{part}"))
    scan_memory(pid)
for top in {os.getcwd(), "/tmp", os.path.dirname(os.path.abspath(__file__))} - {"/"}:
    for directory, _, files in os.walk(top):
        for name in files:
            scan(os.path.join(directory, name), read(os.path.join(directory, name)))
emit(agent="key_scan", found=found)
