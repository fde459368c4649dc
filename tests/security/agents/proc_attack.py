"""Reach processes outside the agent: the kernel and another agent (host pids given by the test).

argv[1]: JSON {"kernel": pid, "victim": pid}. Prints {"outcomes": {attempt: "ok" | errno name},
"visible": pids in /proc}.
"""
import ctypes
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, outcome

pids = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206


def ptrace(request, pid):
    def attempt():
        if libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None) != 0:
            raise OSError(ctypes.get_errno(), "ptrace")
    return attempt


def kill(pid, sig):
    return lambda: os.kill(pid, sig)


def pidfd(pid):
    return lambda: os.close(os.pidfd_open(pid))


def read_environ(pid):
    def attempt():
        with open(f"/proc/{pid}/environ", "rb") as f:
            f.read()
    return attempt


outcomes = {}
for who, pid in pids.items():
    outcomes[f"ptrace attach the {who}"] = outcome(ptrace(PTRACE_ATTACH, pid))
    outcomes[f"ptrace seize the {who}"] = outcome(ptrace(PTRACE_SEIZE, pid))
    outcomes[f"pidfd_open the {who}"] = outcome(pidfd(pid))
    outcomes[f"read the {who}'s environ"] = outcome(read_environ(pid))
    outcomes[f"SIGSTOP the {who}"] = outcome(kill(pid, signal.SIGSTOP))
    outcomes[f"SIGKILL the {who}"] = outcome(kill(pid, signal.SIGKILL))
emit(agent="proc_attack", outcomes=outcomes, visible=sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
