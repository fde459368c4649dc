"""The zygote: a small pre-warmed interpreter that forks every agent.

Starting a fresh interpreter per agent costs tens of milliseconds, almost all of
it imports. The zygote imports the SDK once, freezes its heap for the garbage
collector (so children do not copy pages just by collecting), and then forks one
child per request with ``clone3(CLONE_PARENT | namespaces)``: the child is born in
its namespaces, runs the setup sequence (``child.run``) and then either runs a
Python script in place or execs a program. ``CLONE_PARENT`` makes every agent a
child of the kernel, not of the zygote, so the kernel reaps it, gets its exit
status and its pdeathsig is tied to the kernel.

The zygote is single-threaded by construction, which is what makes the raw
``clone3`` (no C-library fork handlers) safe; the kernel itself never forks agents.

Wire: one SOCK_SEQPACKET socket. Kernel -> zygote: ``pickle(("spawn", plan))`` with
descriptors [handshake, stdin, stdout, stderr, *pass_fds]. Zygote -> kernel:
``("ok", pid)`` with the child's pidfd, or ``("error", step, errno, message)``.
At start the zygote sends ``("ready", pid, host_support)``.
"""
from __future__ import annotations

import errno
import gc
import importlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import types
from typing import Any

from agentos.sandbox import child
from agentos.sandbox._syscalls import syscalls
from agentos.sandbox.plan import Plan
from agentos.sandbox.probe import HostSupport, probe
from agentos.sandbox.spec import SandboxError

__all__ = ["DEFAULT_PRELOAD", "Zygote", "main"]

#: Modules the zygote imports before forking: what agents almost always import.
DEFAULT_PRELOAD = ("agentos", "json", "asyncio", "socket", "selectors", "ujson")
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 253  # SCM_MAX_FD


class Zygote:
    """The kernel's handle on one zygote process."""

    def __init__(self, preload: tuple[str, ...] = DEFAULT_PRELOAD, start_timeout: float = 60.0) -> None:
        self.preload = preload
        self.start_timeout = start_timeout
        self.support: HostSupport | None = None
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        """Whether the zygote process is running (reaps it if it died)."""
        return self._sock is not None and self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the zygote and wait until it is ready (call from a long-lived thread:
        the zygote's parent-death signal fires when the starting thread exits)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from agentos.sandbox.zygote import main; main()",
                 str(theirs.fileno()), str(os.getpid()), ",".join(self.preload)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd="/", start_new_session=True)
        self._sock = ours
        ours.settimeout(self.start_timeout)
        try:
            message = ours.recv(_MAX_MESSAGE)
        except OSError as exc:
            self.close()
            raise SandboxError("zygote", exc.errno or errno.ETIMEDOUT, f"zygote did not start: {exc}") from None
        ours.settimeout(None)
        if not message:
            status = self._process.wait()
            self.close()
            raise SandboxError("zygote", errno.ECHILD, f"zygote exited during start (status {status})")
        _, _, support = pickle.loads(message)
        self.support = support

    def spawn(self, plan: Plan, fds: list[int]) -> tuple[int, int]:
        """Have the zygote fork the child of ``plan``; its (pid, pidfd)."""
        if self._sock is None:
            raise SandboxError("zygote", errno.ESRCH, "zygote is not running")
        try:
            socket.send_fds(self._sock, [pickle.dumps(("spawn", plan))], fds)
            message, received, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
        except OSError as exc:
            self.close()
            raise SandboxError("zygote", exc.errno or errno.EPIPE, f"zygote connection failed: {exc}") from None
        if not message:
            self.close()
            raise SandboxError("zygote", errno.EPIPE, "zygote exited")
        reply = pickle.loads(message)
        if reply[0] == "error":
            raise SandboxError(*reply[1:])
        return reply[1], received[0]

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes) and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


# --- the zygote process ---

def main() -> None:
    """Entry point of the zygote process: ``<socket fd> <kernel pid> <preload,...>``."""
    fd, kernel_pid, preload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    syscalls.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != kernel_pid:
        os._exit(1)  # the kernel died before the line above took effect
    # Terminal signals are the kernel's to handle; agents reset them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    for name in filter(None, preload.split(",")):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a preload is an optimisation: the agent imports it (or fails) itself
    support = probe()
    sys.stdout.flush()
    gc.collect()
    gc.freeze()
    sock.send(pickle.dumps(("ready", os.getpid(), support)))
    _serve(sock)


def _serve(sock: socket.socket) -> None:
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)  # the kernel closed its end
        try:
            _, plan = pickle.loads(message)
            reply, pidfd = _spawn(sock, plan, fds)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the zygote
            reply, pidfd = ("error", "zygote", 0, f"{type(exc).__name__}: {exc}"), None
        finally:
            for fd in fds:
                os.close(fd)
        socket.send_fds(sock, [pickle.dumps(reply)], [pidfd] if pidfd is not None else [])
        if pidfd is not None:
            os.close(pidfd)


def _spawn(sock: socket.socket, plan: Plan, fds: list[int]) -> tuple[tuple[Any, ...], int | None]:
    handshake, *io = fds
    script = None
    if plan.python_script is not None:
        try:
            script = _compiled(plan.python_script)
        except (OSError, SyntaxError, ValueError) as exc:
            return ("error", "compile script", getattr(exc, "errno", 0) or 0, f"{type(exc).__name__}: {exc}"), None
    try:
        pid, pidfd = syscalls.clone3(plan.clone_flags | syscalls.CLONE_PARENT)
    except OSError as exc:
        return ("error", "clone", exc.errno or 0, exc.strerror or str(exc)), None
    if pid == 0:
        try:
            # The socket object must not close a number the agent reuses when collected.
            sock.detach()
            child.run(plan, io, handshake, script)
        finally:
            os._exit(child.SETUP_FAILED)  # a child must never fall back into the zygote's loop
    return ("ok", pid), pidfd


#: script path -> (mtime_ns, size, code): agents started again and again compile once.
_scripts: dict[str, tuple[int, int, types.CodeType]] = {}


def _compiled(path: str) -> types.CodeType:
    """The script compiled, from the cache while the file is unchanged.

    Read here, with the kernel's view of the file system: the script itself need
    not be visible inside the sandbox (its directory is, for its imports).
    """
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        cached = _scripts.get(path)
        if cached is not None and cached[:2] == (info.st_mtime_ns, info.st_size):
            return cached[2]
        code = compile(f.read(), path, "exec")
    _scripts[path] = (info.st_mtime_ns, info.st_size, code)
    return code
