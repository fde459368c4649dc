"""Report, as one JSON object on stdout, what this process can see and do from inside its sandbox.

argv[1] (JSON): {"tcp": [host, port] to connect to, "write": [paths to try creating a file in]}.
"""
import errno
import json
import os
import socket
import sys

checks = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def connect(host, port):
    with socket.socket() as s:
        s.settimeout(5)
        s.connect((host, port))


def create_in(directory):
    path = os.path.join(directory, f"probe-{os.getpid()}")
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


def status():
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


proc_pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
fields = status()
report = {
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "proc_pids": proc_pids,
    "hostname": socket.gethostname(),
    "uid": os.getuid(),
    "cap_eff": fields["CapEff"].strip(),
    "cap_bnd": fields["CapBnd"].strip(),
    "no_new_privs": fields["NoNewPrivs"].strip(),
    "seccomp": fields["Seccomp"].strip(),
    "links": [name for _, name in socket.if_nameindex()],
    "root": sorted(os.listdir("/")),
    "cwd": os.getcwd(),
    "cgroup": read_lines("/proc/self/cgroup"),
    "tcp": outcome(lambda: connect(*checks["tcp"])) if "tcp" in checks else None,
    "write": {d: outcome(lambda d=d: create_in(d)) for d in checks.get("write", [])},
}
print(json.dumps(report))
