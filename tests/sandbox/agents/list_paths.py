"""For each path in argv, print (as one JSON object) what this agent sees there: a directory's
sorted entries, "read" for a file it could read, "connected" for a Unix socket it could
connect to, or the errno name of the failure."""
import errno
import json
import os
import socket
import stat
import sys


def look(path):
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path))
        if stat.S_ISSOCK(os.stat(path).st_mode):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return "connected"
        with open(path, "rb") as f:
            f.read()
        return "read"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


print(json.dumps({path: look(path) for path in sys.argv[1:]}))
