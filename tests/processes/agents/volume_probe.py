"""Does one thing to a mounted volume and reports it: one line ``VOLUME {json}``.

argv: the volume's path in the view, then one action: ``write:TEXT`` (into ``note``), ``read``
(``note``, then tries to write ``other``), ``fill:CAP`` (writes ``fill`` until refused, at most
CAP MiB) or ``look``; ``--stay`` waits to be killed afterwards. The report has cwd, uid, the
owner of the path, statvfs's size, and each result or its errno name.
"""
import errno
import json
import os
import sys
import time

path, action = sys.argv[1], sys.argv[2]
kind, _, arg = action.partition(":")
info = os.statvfs(path)
report = {"cwd": os.getcwd(), "uid": os.getuid(), "owner": os.stat(path).st_uid,
          "total": info.f_blocks * info.f_frsize}


def attempt(step):
    try:
        return step()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def write(name, text):
    with open(os.path.join(path, name), "w") as f:
        f.write(text)
    return "ok"


def read():
    with open(os.path.join(path, "note")) as f:
        return f.read()


def fill():
    chunk, written = os.urandom(1 << 20), 0
    fd = os.open(os.path.join(path, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while written < int(arg) << 20:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                report["refused"] = errno.errorcode.get(exc.errno, str(exc.errno))
                break
    finally:
        os.close(fd)
    return written / (1 << 20)


if kind == "write":
    report["write"] = attempt(lambda: write("note", arg))
elif kind == "read":
    report["read"] = attempt(read)
    report["write"] = attempt(lambda: write("other", "x"))
elif kind == "fill":
    report["mib"] = fill()
print("VOLUME " + json.dumps(report), flush=True)
if "--stay" in sys.argv:
    time.sleep(600)
