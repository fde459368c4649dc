"""Try every way out to the network and report each outcome.

Usage: network_probe.py [HOST:PORT ...]  (extra TCP targets, e.g. a server on the host's loopback)
Prints {"agent": "network_probe", "interfaces": [...], "results": {target: "ok" | errno name},
"reachable": [targets that connected]}. In a sandbox without network, "reachable" is empty
and "interfaces" is ["lo"].
"""
import errno
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, ready


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        if isinstance(exc, socket.gaierror):
            return f"gaierror {exc.errno}"
        return errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__


def tcp(host, port):
    def go():
        with socket.create_connection((host, port), timeout=3):
            pass
    return go


def udp_dns():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("1.1.1.1", 53))
        s.send(b"\0")
        s.recv(512)


targets = {
    "tcp 1.1.1.1:443": tcp("1.1.1.1", 443),
    "tcp [2606:4700:4700::1111]:443": tcp("2606:4700:4700::1111", 443),
    "udp 1.1.1.1:53": udp_dns,
    "dns pypi.org": lambda: socket.getaddrinfo("pypi.org", 443),
}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    targets[f"tcp {target}"] = tcp(host, int(port))
ready()
results = {name: attempt(fn) for name, fn in targets.items()}
emit(agent="network_probe", interfaces=[name for _, name in socket.if_nameindex()], results=results,
     reachable=sorted(name for name, outcome in results.items() if outcome == "ok"))
