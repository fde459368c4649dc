"""Try to reach a volume this agent was not given, or more of one than it was given.

It runs with volume ``mine`` (writable, at /mine) and ``ro`` (read-only, at /ro) of its project.
argv[1]: JSON {"victim": the other project, "socket_dir", "state_dir": the kernel's, "child":
a SPAWN payload for a harmless child (script, args, allow_degraded)}. Each attempt is a
child's SPAWN or a VOLUMES call; prints {"outcomes": {attempt: "ok" | error code (and field)},
"seen": [names VOLUMES ls shows], "writes": {path: "ok" | errno name}}.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, outcome

import agentos
from agentos.protocol import Op

task = json.loads(sys.argv[1])
client = agentos.Client()


def spawn(volumes, **extra):
    def attempt():
        info = client._call(Op.SPAWN, {**task["child"], "volumes": volumes, **extra})
        client.kill(id=info["id"], grace=0)
    return attempt


def volumes(**request):
    return lambda: client._call(Op.VOLUMES, request)


def verdict(fn):
    try:
        fn()
        return "ok"
    except agentos.SyscallError as exc:
        field = exc.details.get("field")
        return f"{exc.code.value} {field}" if field else exc.code.value


def write(path):
    def attempt():
        with open(path, "w") as f:
            f.write("attacker's")
    return attempt


mine = {"name": "mine", "path": "/m"}
outcomes = {
    "mount the other project's volume": verdict(spawn([{"name": "secret", "path": "/s"}])),
    "mount a volume of its project it was not given": verdict(spawn([{"name": "other", "path": "/o"}])),
    "a name that climbs out": verdict(spawn([{"name": "../../" + task["victim"] + "/secret", "path": "/s"}])),
    "mount over /proc": verdict(spawn([{**mine, "path": "/proc"}])),
    "mount over /dev/shm": verdict(spawn([{**mine, "path": "/dev/shm"}])),
    "a path that climbs into /proc": verdict(spawn([{**mine, "path": "/x/../proc/1"}])),
    "mount over the kernel's socket dir": verdict(spawn([{**mine, "path": task["socket_dir"]}])),
    "mount over the kernel's state dir": verdict(spawn([{**mine, "path": task["state_dir"]}])),
    "its read-only volume writable": verdict(spawn([{"name": "ro", "path": "/r"}])),
    "a bigger quota": verdict(spawn([{**mine, "size": "1Gi"}])),
    "into the other project": verdict(spawn([mine], project=task["victim"])),
    "unsandboxed": verdict(spawn([mine], sandboxed=False)),
    "its own volume, as given": verdict(spawn([mine])),
    "its read-only volume, read-only": verdict(spawn([{"name": "ro", "path": "/r", "read_only": True}])),
    "remove its own volume": verdict(volumes(action="rm", name="mine")),
    "inspect the other project's volume": verdict(volumes(action="inspect", name="secret", project=task["victim"])),
    "another uid's volumes": verdict(volumes(action="ls", uid=12345)),
}
seen = sorted(v["name"] for v in client._call(Op.VOLUMES, {"action": "ls"})["volumes"])
emit(outcomes=outcomes, seen=seen, writes={"/mine": outcome(write("/mine/note")), "/ro": outcome(write("/ro/note"))})
