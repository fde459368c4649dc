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
At start the zygote sends ``("ready", pid, host_support)``; whenever it forks an
embryo (a child waiting ahead of time, see ``_Embryo``) it announces
``("embryo", pid)`` with its pidfd, so the kernel can reap one that is never used.

Every agent descends from the zygote, and a forked agent keeps the environment
block its zygote was started with (``/proc/self/environ`` shows it whatever
``os.environ`` says): so the zygote is started with the agent base environment
only (``BASE_ENV``), never the kernel's, which holds API keys.
"""
from __future__ import annotations

import array
import errno
import gc
import importlib
import marshal
import os
import pickle
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Mapping
from typing import Any, NoReturn

from agentos.sandbox import child
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import Plan
from agentos.sandbox.probe import HostSupport, probe
from agentos.sandbox.spec import SandboxError

__all__ = ["BASE_ENV", "DEFAULT_PRELOAD", "Zygote", "base_env", "main"]

#: Modules the zygote imports before forking: what agents almost always import.
DEFAULT_PRELOAD = ("agentos", "json", "asyncio", "socket", "selectors", "ujson")
#: The only variables of the caller's environment the zygote starts with: what finds
#: and runs this Python installation, locale and time zone. Nothing secret.
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHOME", "AGENTOS_NO_EXTENSIONS")
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 253  # SCM_MAX_FD
#: How long close() waits for a busy zygote to finish announcing its embryo.
_SYNC_TIMEOUT = 10.0


def base_env(names: tuple[str, ...] = BASE_ENV) -> dict[str, str]:
    """The zygote's environment: ``names`` taken from this process's, PATH always set."""
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("PATH", os.defpath)
    return env


class Zygote:
    """The kernel's handle on one zygote process."""

    def __init__(self, preload: tuple[str, ...] = DEFAULT_PRELOAD, start_timeout: float = 60.0,
                 env: Mapping[str, str] | None = None) -> None:
        self.preload = preload
        self.start_timeout = start_timeout
        #: The zygote's whole environment (None: ``base_env()`` when it starts).
        self.env = env
        self.support: HostSupport | None = None
        #: Preloaded modules that failed to import (their agents import them, or fail, themselves).
        self.missing: tuple[str, ...] = ()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        #: Children forked ahead of time (ours to reap if never used). Pids, not pidfds, so an
        #: idle kernel holds no descriptor for them: as our children, their pids cannot be reused.
        self._embryos: set[int] = set()

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
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd="/", start_new_session=True,
                env=dict(self.env) if self.env is not None else base_env())
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
        _, _, support, missing = pickle.loads(message)
        self.support, self.missing = support, tuple(missing)

    def memory(self) -> dict[str, int]:
        """The zygote's resident memory, ``rss`` and ``pss`` in bytes (its pages shared with the
        agents it forked count once in all of theirs); empty when it is not running."""
        if self._process is None:
            return {}
        try:
            with open(f"/proc/{self._process.pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines()[1:] if ":" in line)
        except OSError:
            return {}
        return {key: int(fields[name].split()[0]) * 1024 for key, name in (("rss", "Rss"), ("pss", "Pss"))
                if name in fields}

    @property
    def embryo_pids(self) -> list[int]:
        """Children forked ahead of time and not yet used (they are the caller's children)."""
        self._sync()
        return list(self._embryos)

    def _sync(self) -> None:
        """Wait until the zygote is idle: an embryo it is forking right now gets recorded too."""
        if self._sock is None:
            return
        timeout = self._sock.gettimeout()
        self._sock.settimeout(_SYNC_TIMEOUT)
        try:
            self._sock.send(pickle.dumps(("ping", None)))
            self._receive()  # ("pong",): every announcement sent before it is recorded
        except OSError:
            pass  # a zygote that is gone or stuck announces nothing more
        finally:
            self._sock.settimeout(timeout)

    def spawn(self, plan: Plan, fds: list[int]) -> tuple[int, int]:
        """Have the zygote fork the child of ``plan``; its (pid, pidfd)."""
        if self._sock is None:
            raise SandboxError("zygote", errno.ESRCH, "zygote is not running")
        try:
            socket.send_fds(self._sock, [pickle.dumps(("spawn", plan))], fds)
            reply, received = self._receive()
        except OSError as exc:
            self.close()
            raise SandboxError("zygote", exc.errno or errno.EPIPE, f"zygote connection failed: {exc}") from None
        if reply is None:
            self.close()
            raise SandboxError("zygote", errno.EPIPE, "zygote exited")
        if reply[0] == "error":
            raise SandboxError(*reply[1:])
        pid = reply[1]
        self._embryos.discard(pid)  # it became this agent
        return pid, received[0]

    def _receive(self) -> tuple[tuple[Any, ...] | None, list[int]]:
        """The next reply (None at end of file), recording embryo announcements on the way."""
        assert self._sock is not None
        while True:
            message, received = _recv_fds(self._sock, 1)
            if not message:
                return None, []
            reply = pickle.loads(message)
            if reply[0] != "embryo":
                return reply, received
            self._embryos.add(reply[1])
            for fd in received:
                os.close(fd)

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes), reap it and any unused embryo."""
        self._sync()
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
        for pid in self._embryos:
            try:
                pidfd = linux.pidfd_open(pid)
            except ProcessLookupError:
                continue  # someone reaped it already
            try:
                linux.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            finally:
                os.close(pidfd)
        self._embryos.clear()


def _recv_fds(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries, close-on-exec (``socket.recv_fds`` of
    Python 3.11 cannot ask for that: it ignores its flags)."""
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_LEN(max_fds * fds.itemsize),
                                            socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return message, list(fds)


# --- the zygote process ---

def main() -> None:
    """Entry point of the zygote process: ``<socket fd> <kernel pid> <preload,...>``."""
    fd, kernel_pid, preload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != kernel_pid:
        os._exit(1)  # the kernel died before the line above took effect
    # Terminal signals are the kernel's to handle; agents reset them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    missing = []
    for name in filter(None, preload.split(",")):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)  # a preload is an optimisation: the agent imports it (or fails) itself
    support = probe()
    sys.stdout.flush()
    gc.collect()
    gc.freeze()
    sock.send(pickle.dumps(("ready", os.getpid(), support, missing)))
    _serve(sock)


class _Embryo:
    """A child forked ahead of time, waiting inside its new namespaces for the next plan.

    Forking (and making the namespaces, the network one above all) is most of the
    zygote's work per agent; an embryo has it done before the request arrives, so
    a request only hands it the plan. The next embryo is forked after the reply,
    while the previous agent sets itself up.
    """

    def __init__(self, flags: int, control: socket.socket) -> None:
        self.flags = flags
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid, self.pidfd = linux.clone3(flags | linux.CLONE_PARENT)
        if self.pid == 0:
            try:
                # The kernel must see end of file when the zygote dies: hold no copy of its socket.
                os.close(control.detach())
                self.channel.close()
                linux.set_pdeathsig(signal.SIGKILL)
                _develop(theirs)
            finally:
                os._exit(child.SETUP_FAILED)
        theirs.close()

    def hand_over(self, plan: Plan, script: types.CodeType | None, fds: list[int]) -> bool:
        """Give this embryo its plan; False if it is gone (then fork as usual)."""
        payload = pickle.dumps((plan, None if script is None else marshal.dumps(script)))
        try:
            socket.send_fds(self.channel, [payload], fds)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.channel.close()
        os.close(self.pidfd)


def _develop(channel: socket.socket) -> NoReturn:
    """The embryo: wait for a plan, then become that agent (end of file: exit quietly)."""
    message, fds = _recv_fds(channel, _MAX_FDS)
    if not message:
        os._exit(0)
    channel.detach()  # its fd is closed with every other one when the descriptors are arranged
    plan, script = pickle.loads(message)
    handshake, *io = fds
    split = len(io) - len(plan.idmaps)
    child.run(plan, io[:split], handshake, None if script is None else marshal.loads(script), io[split:])


def _serve(sock: socket.socket) -> None:
    embryo: _Embryo | None = None
    while True:
        try:
            message, fds = _recv_fds(sock, _MAX_FDS)
        except InterruptedError:
            continue
        except ConnectionError:
            os._exit(0)  # the kernel died with a message unread (ECONNRESET): as at end of file
        if not message:
            os._exit(0)  # the kernel closed its end (an embryo sees its channel close and exits)
        plan = None
        reply: tuple[Any, ...]
        try:
            kind, plan = pickle.loads(message)
            if kind == "ping":
                reply, pidfd, used = ("pong",), None, False
            else:
                reply, pidfd, used = _spawn(sock, plan, fds, embryo)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the zygote
            reply, pidfd, used = ("error", "zygote", 0, f"{type(exc).__name__}: {exc}"), None, False
        finally:
            for fd in fds:
                os.close(fd)
        try:
            socket.send_fds(sock, [pickle.dumps(reply)], [pidfd] if pidfd is not None else [])
        except OSError:
            os._exit(0)  # the kernel is gone (its children, embryos included, die with it)
        if pidfd is not None and not used:
            os.close(pidfd)
        if used and embryo is not None:
            embryo.close()
            embryo = None
        if embryo is None and plan is not None and plan.sandboxed and plan.clone_flags:
            embryo = _new_embryo(plan.clone_flags, sock)


def _new_embryo(flags: int, sock: socket.socket) -> _Embryo | None:
    """Fork the next embryo and announce it to the kernel, which reaps it if it is never used."""
    try:
        embryo = _Embryo(flags, sock)
    except OSError:
        return None  # the next request forks as usual
    try:
        socket.send_fds(sock, [pickle.dumps(("embryo", embryo.pid))], [embryo.pidfd])
    except OSError:
        os._exit(0)  # the kernel is gone
    return embryo


def _spawn(sock: socket.socket, plan: Plan, fds: list[int],
           embryo: _Embryo | None) -> tuple[tuple[Any, ...], int | None, bool]:
    """Start the child of ``plan``: (reply, pidfd to send, whether the embryo became it)."""
    handshake, *io = fds
    try:
        idmaps = [_userns(owner, plan.run_as) for owner in plan.idmaps] if plan.run_as else []
    except OSError as exc:
        return ("error", "idmap", exc.errno or 0, f"cannot make the user namespace of an idmapped bind: {exc}"), \
            None, False
    script = None
    if plan.python_script is not None and os.path.dirname(plan.python_script) == _OWN:
        try:
            script = _compiled(plan.python_script)
        except OSError as exc:
            return ("error", "compile script", exc.errno or 0, exc.strerror or str(exc)), None, False
        except (SyntaxError, ValueError) as exc:
            return ("error", "compile script", 0, f"{type(exc).__name__}: {exc}"), None, False
    if embryo is not None and embryo.flags == plan.clone_flags and embryo.hand_over(plan, script, fds + idmaps):
        return ("ok", embryo.pid), embryo.pidfd, True
    try:
        pid, pidfd = linux.clone3(plan.clone_flags | linux.CLONE_PARENT)
    except OSError as exc:
        return ("error", "clone", exc.errno or 0, exc.strerror or str(exc)), None, False
    if pid == 0:
        try:
            # Socket objects must not close numbers the agent reuses when collected.
            sock.detach()
            if embryo is not None:
                embryo.channel.detach()
            if plan.join:
                child.enter(plan, io, handshake, script)
            else:
                child.run(plan, io, handshake, script, idmaps)
        finally:
            os._exit(child.SETUP_FAILED)  # a child must never fall back into the zygote's loop
    return ("ok", pid), pidfd, False


#: (owner uid, gid, agent uid, gid) -> a user namespace mapping the owner to the agent.
_usernss: dict[tuple[int, int, int, int], int] = {}


def _userns(owner: tuple[int, int], agent: tuple[int, int]) -> int:
    """A user namespace that shows ``owner``'s files as ``agent``'s, for idmapped binds.

    Made once per owner (a child is forked into a new user namespace, mapped, and
    let go; the namespace lives on in the descriptor), so spawns do not fork for it.
    """
    key = (*owner, *agent)
    fd = _usernss.get(key)
    if fd is not None:
        return fd
    r, w = os.pipe()
    try:
        pid, pidfd = linux.clone3(linux.CLONE_NEWUSER)
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)  # until the zygote has the namespace
        finally:
            os._exit(0)
    os.close(r)
    try:
        # "inside outside 1": the idmapping shows the file id ``inside`` as the host id ``outside``.
        for name, inside, outside in (("uid_map", owner[0], agent[0]), ("gid_map", owner[1], agent[1])):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"{inside} {outside} 1\n")
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        os.close(pidfd)
    _usernss[key] = fd
    return fd


#: The directory of agentos's own scripts (``interpreter.py``, ``idle.py``): the only ones the
#: zygote compiles, since they hold nothing of anyone's. Any other script is read and compiled
#: by its agent's child (``child.compile_script``): whatever the zygote once held stays in its
#: memory, and every later agent, of any caller, is forked from it.
_OWN = os.path.dirname(os.path.realpath(child.__file__))
#: script path -> (mtime_ns, size, code): agents started again and again compile once.
_scripts: dict[str, tuple[int, int, types.CodeType]] = {}


def _compiled(path: str) -> types.CodeType:
    """One of agentos's own scripts compiled, from the cache while the file is unchanged."""
    with child.open_script(path) as f:
        info = os.fstat(f.fileno())
        cached = _scripts.get(path)
        if cached is not None and cached[:2] == (info.st_mtime_ns, info.st_size):
            return cached[2]
        code = compile(f.read(), path, "exec")
    _scripts[path] = (info.st_mtime_ns, info.st_size, code)
    return code
