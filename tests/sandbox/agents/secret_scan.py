"""Look everywhere this agent can reach for strings that start with a marker (argv[1]);
print what follows each occurrence as one JSON object: {"where": [...], "found": [...]}.

It is never told a secret, only the public marker the test's secrets begin with: the
environ and cmdline of every process it can see, every other readable file in their
/proc directories, their whole readable memory (through maps and mem), and the files
of its private /tmp and working directory (unless that is /: the host's files hold no
secret of the kernel's). A child is forked first, so there is a
process besides itself to look at.
"""
import json
import os
import re
import sys
import time

marker = sys.argv[1].encode()
pattern = re.compile(re.escape(marker) + rb"[0-9a-f]{8,64}")
#: /proc/<pid> entries that are not plain files to read (or hang, or are huge and binary).
SKIP = {"mem", "pagemap", "clear_refs", "kpageflags", "task", "fd", "fdinfo", "ns", "net", "map_files",
        "attr", "cwd", "root", "exe"}
found: set[str] = set()
where: set[str] = set()


def scan(data, place):
    where.add(place)
    for match in pattern.finditer(data):
        found.add(match.group().decode())


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(16 << 20)
    except OSError:
        return None


def memory(pid):
    maps = read(f"/proc/{pid}/maps")
    if maps is None:
        return
    try:
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError:
        return
    with mem:
        for line in maps.decode().splitlines():
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            try:
                mem.seek(start)
                scan(mem.read(end - start), f"/proc/{pid}/mem")
            except (OSError, OverflowError, ValueError):
                pass


child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
try:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for entry in sorted(set(os.listdir(f"/proc/{pid}")) - SKIP):
            data = read(f"/proc/{pid}/{entry}")
            if data is not None:
                scan(data, f"/proc/{pid}/{entry}")
        memory(pid)
    for top in {"/tmp", os.getcwd()} - {"/"}:
        for directory, _, files in os.walk(top):
            for name in files:
                data = read(os.path.join(directory, name))
                if data is not None:
                    scan(data, os.path.join(directory, name))
finally:
    os.kill(child, 9)
    os.waitpid(child, 0)
shown = sorted(p for p in where if p.rsplit("/", 1)[-1] in ("environ", "cmdline", "mem"))
print(json.dumps({"where": shown, "scanned": len(where), "found": sorted(found)}))
