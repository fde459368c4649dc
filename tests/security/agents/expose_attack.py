"""Expose or reach a port that is not this agent's to reach.

argv[1]: JSON {"sibling": the name of an agent someone else spawned (serving on its 8000),
"path": the Unix socket of an exposure of that sibling's port}. The agent holds ``spawn`` and
``observe``. Prints {"outcomes": {attempt: "ok" | error code | errno name}, "listed": [...]}.
"""
import errno
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

target = json.loads(sys.argv[1])
client = agentos.Client()
outcomes: dict[str, str] = {}


def attempt(label, fn):
    try:
        fn()
        outcomes[label] = "ok"
    except agentos.SyscallError as exc:
        outcomes[label] = exc.code.value
    except OSError as exc:
        outcomes[label] = errno.errorcode.get(exc.errno, str(exc))


def connect_path(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)


def connect_port(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


attempt("expose sibling", lambda: client.expose(target["sibling"], 8000))
listed = [e["name"] for e in client.exposures()]
attempt("unexpose sibling's", lambda: client.unexpose(target["exposure"]))
attempt("sibling's exposure path", lambda: connect_path(target["path"]))
attempt("sibling's port on own loopback", lambda: connect_port(8000))
attempt("expose self over tcp", lambda: client.expose(os.environ["AGENTOS_AGENT_NAME"], 8000, tcp=True))
own = client.expose(os.environ["AGENTOS_AGENT_NAME"], 8000)
attempt("own exposure path", lambda: connect_path(own.path))
own.close()
emit(agent="expose_attack", outcomes=outcomes, listed=listed)
