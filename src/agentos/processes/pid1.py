"""Signals a sandboxed agent's main process would never see: it is pid 1 of its pid namespace.

Linux drops a signal sent to a namespace's init from outside unless init handles it, so a
sandboxed ``sleep`` outlives KILL's SIGTERM and every stop of it waits out its whole grace
period. ``dropped`` tells the kernel when that is about to happen; it then does what the signal
would have done to any other process (end it), which ends the namespace with it.
"""
from __future__ import annotations

import signal

#: Signals whose default action ends the process (signal(7): Term and Core), which is what a
#: namespace init without a handler is spared.
_ENDING = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGALRM, signal.SIGABRT, signal.SIGPIPE})


def dropped(pid: int, sig: int) -> bool:
    """Whether ``sig`` sent to ``pid`` would be dropped where it would end another process:
    ``pid`` is pid 1 of its namespace and neither handles nor ignores ``sig``.

    Racy only against the process installing a handler between this read and the signal, as
    an exit is against any signal; False once the process is gone."""
    if sig not in _ENDING:
        return False
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # Only the three lines needed: a shutdown reads this for every agent, and splitting all
    # ~55 lines into a dict cost as much as the read (~60 -> ~40 us a call).
    nspid = _field(status, b"\nNSpid:").split()
    if len(nspid) < 2 or nspid[-1] != b"1":
        return False
    bit = 1 << (sig - 1)
    return not (int(_field(status, b"\nSigCgt:"), 16) | int(_field(status, b"\nSigIgn:"), 16)) & bit


def _field(status: bytes, key: bytes) -> bytes:
    """The value of the line ``key`` begins (``b""`` without one), in /proc/<pid>/status."""
    start = status.find(key)
    if start < 0:
        return b""
    start += len(key)
    end = status.find(b"\n", start)
    return status[start:] if end < 0 else status[start:end]
