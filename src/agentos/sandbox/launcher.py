"""The parent's side of a launch: plan, fork through the zygote, handshake, hand back.

``Launcher.launch`` is synchronous and takes a few milliseconds: the zygote forks
(a small process forks fast), the child sets itself up while the parent runs
``before_exec`` (the cgroup move) and queues its go-ahead, which the child takes once
ready; then the parent waits for end of file (the agent started) or an error record
(raised as ``SandboxError`` with the child's step and errno, after the child is reaped).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Self

from agentos.parking import ParkingQueue
from agentos.sandbox import child, initd
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import Plan, entry_plan, make_plan
from agentos.sandbox.probe import HostSupport
from agentos.sandbox.spec import Launched, SandboxError, SandboxSpec
from agentos.sandbox.templates import Template, TemplateSettings, TemplateZygotes
from agentos.sandbox.zygote import DEFAULT_PRELOAD, Zygote

__all__ = ["Launcher"]

#: waitid's __WALL: a child with no exit signal (forked with CLONE_PARENT) is reaped only with it.
_WALL = 0x40000000


class _Owner(threading.Thread):
    """The one thread that starts (and restarts) the zygote.

    An agent's parent-death signal fires when the *thread* that forked its parent
    exits; with ``CLONE_PARENT`` that is the thread that started the zygote. A
    thread of the launcher's own, alive exactly as long as the launcher, makes
    agents die with the launcher (or the kernel process), never with whichever
    worker thread happened to call ``launch`` first.
    """

    def __init__(self) -> None:
        super().__init__(name="agentos-sandbox-owner", daemon=True)
        self._calls = ParkingQueue()  # idle, it waits parked (agentos.parking)

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on this thread and wait for it."""
        done: Future[None] = Future()
        self._calls.put((fn, done))
        done.result()

    def stop(self) -> None:
        self._calls.put(None)
        self.join()

    def run(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, done = item
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                done.set_exception(exc)
            else:
                done.set_result(None)


class Launcher:
    """Starts sandboxed agents. One per kernel: ``start()`` once, ``launch()`` per agent, ``close()``.

    Every agent, exec'd or not, is forked by the launcher's zygote and is a child
    of the calling process, which must reap it (``Launched.wait``). Agents get
    SIGKILL when the launcher is closed or its process dies: stop them first.
    If the zygote dies, the next ``launch`` starts a new one.
    """

    def __init__(self, *, preload: tuple[str, ...] = DEFAULT_PRELOAD, setup_timeout: float = 30.0,
                 env: Mapping[str, str] | None = None, templates: TemplateSettings | None = None) -> None:
        """``env`` is the zygote's whole environment (default: the base variables of
        ``zygote.BASE_ENV``); every agent descends from it. Agents get their spec's.
        ``templates``: the templates ``launch`` may be asked for, each with a zygote of its own."""
        self.setup_timeout = setup_timeout
        self._zygote = Zygote(preload, env=env)
        self.templates = TemplateZygotes(templates or TemplateSettings(), env)
        self._owner: _Owner | None = None
        self._lock = threading.Lock()
        self._devnull = -1
        self._new_root = ""

    @property
    def support(self) -> HostSupport:
        """What this host supports (probed once by the zygote)."""
        if self._zygote.support is None:
            raise SandboxError("zygote", errno.ESRCH, "launcher not started")
        return self._zygote.support

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._zygote.pid

    @property
    def embryo_pids(self) -> list[int]:
        """Children the zygote forked ahead of time for the next agents (reaped by ``close``)."""
        with self._lock:
            return [*self._zygote.embryo_pids, *self.templates.embryo_pids()]

    def with_embryos(self, call: Callable[[list[int]], None]) -> None:
        """``call(pids)`` with the default zygote's unused embryos, while no launch can take one
        (what the caller records of them is in place before any of them becomes an agent)."""
        with self._lock:
            call(self._zygote.embryo_pids)

    def start(self) -> None:
        """Start the zygote (about 0.1-0.3 s, once)."""
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if not self._new_root:
            self._new_root = _mount_point()
        if self._owner is None:
            self._owner = _Owner()
            self._owner.start()
        self._owner.call(self._zygote.start)
        self.templates.start_eager(self._start_zygote)

    def _start_zygote(self, zygote: Zygote) -> None:
        # On the owner thread, as every zygote: its agents' parent-death signal is tied to it.
        assert self._owner is not None
        self._owner.call(zygote.start)

    def close(self) -> None:
        """Stop the zygotes; agents still running get SIGKILL (their parent-death signal)."""
        self._zygote.close()
        self.templates.close()
        if self._owner is not None:
            self._owner.stop()
            self._owner = None
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def launch(self, spec: SandboxSpec, template: str | None = None) -> Launched:
        """Start one agent as ``spec`` says, from ``template`` if named (its root under the view,
        its python_path bound, forked by its zygote); raises ``SandboxError(step, errno, message)``
        for any failure before the agent runs (nothing is left behind then)."""
        chosen: Template | None = None
        if template is not None:
            chosen = self.templates.templates.get(template)
            if chosen is None:
                raise SandboxError("template", errno.ENOENT, f"no template {template!r}")
            spec = dataclasses.replace(spec, readonly_paths=[*spec.readonly_paths, *chosen.python_path])
        plan, report = make_plan(spec, self.support, self._new_root, base=chosen.root if chosen else None)
        report["spawn"] = "zygote" if spec.python_script else "exec"
        if chosen is not None:
            report["template"] = plan.template = chosen.name
        io = [self._devnull if fd is None else fd for fd in (spec.stdin_fd, spec.stdout_fd, spec.stderr_fd)]
        # A sandbox's pid 1, the kernel's own static program, is not waited for into its exec.
        until_exec = spec.python_script is None and spec.argv[:1] == [initd.binary()]
        launched = self._start(plan, [*io, *spec.pass_fds], spec.before_exec, report, template,
                               until_exec=until_exec)
        launched.entry = entry_plan(plan)
        return launched

    def enter(self, entry: Plan, target_pidfd: int, argv: list[str], env: dict[str, str], cwd: str, *,
              stdin_fd: int, stdout_fd: int, stderr_fd: int, terminal: bool = False,
              before_exec: Callable[[int], None] | None = None, run_as: tuple[int, int] | None = None,
              control_fd: int | None = None, python_script: str | None = None) -> Launched:
        """Start ``argv`` inside a running agent (EXEC): ``entry`` is its ``Launched.entry``,
        ``target_pidfd`` its pidfd. The process joins the agent's namespaces and is confined as
        the agent is; ``before_exec(pid)`` places it in the agent's cgroup. The caller reaps it.

        ``terminal``: the three descriptors are a terminal, made the controlling one.
        ``run_as``: (uid, gid) instead of the agent's (the caller decided it is no wider).
        ``control_fd``: the process stays as the command's subreaper, driven over this socket
        (``sandbox/subreaper.py``).
        ``python_script``: ``argv`` is ``[python, python_script, *args]``, run warm: the zygote that
        forked the agent (its template's, with the template's modules imported) forks the process,
        which runs the script in place once confined, as a new ``python`` would run it.
        Raises ``SandboxError`` as ``launch`` does (``cwd``, ``exec``: the agent's view has no
        such directory or program).
        """
        if python_script is not None:
            argv = [argv[0], *argv[2:]]  # the script's sys.argv is [python_script, *args]
        plan = dataclasses.replace(entry, argv=list(argv), env=dict(env), cwd=cwd, terminal=terminal,
                                   run_as=run_as or entry.run_as, subreaper=control_fd is not None,
                                   python_script=python_script)
        fds = [stdin_fd, stdout_fd, stderr_fd, *([control_fd] if control_fd is not None else []),
               *([target_pidfd] if plan.join else [])]
        return self._start(plan, fds, before_exec, {"entered": True},
                           entry.template if python_script is not None else None)

    def _start(self, plan: Plan, fds: list[int], before_exec: Callable[[int], None] | None,
               report: dict[str, Any], template: str | None = None, *, until_exec: bool = False) -> Launched:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            # The agent's argv and env go to the child directly, never through the zygote: whatever
            # the zygote once held stays in its memory, which every later agent is forked from.
            _send_request(ours, plan.argv, plan.env)
            private = dataclasses.replace(plan, argv=[], env={})
            with theirs:
                if template is None:
                    with self._lock:
                        if not self._zygote.alive and self._owner is not None:
                            self._zygote.close()
                            self._owner.call(self._zygote.start)  # the zygote died: a new one
                        pid, pidfd = self._zygote.spawn(private, [theirs.fileno(), *fds])
                else:
                    # Started (or replaced, when it died) here; its lock held through the spawn.
                    zygote, lock = self.templates.acquire(template, self._start_zygote)
                    try:
                        pid, pidfd = zygote.spawn(private, [theirs.fileno(), *fds])
                    finally:
                        lock.release()
            launched = Launched(pid=pid, pidfd=pidfd, isolation=report)
            try:
                ours.settimeout(self.setup_timeout)
                if plan.join:
                    launched = _inside(ours, launched)
                self._handshake(ours, launched, before_exec, until_exec)
            except BaseException:
                _discard(launched)
                raise
        return launched

    def _handshake(self, sock: socket.socket, launched: Launched,
                   before_exec: Callable[[int], None] | None, until_exec: bool = False) -> None:
        """Drive the child's setup to its end: end of file, its exec done (``until_exec``: its
        timings, sent just before the exec, which is not waited for)."""
        if before_exec is not None:
            # Now, while the child sets up (its view above all), not once it is READY: a cgroup v1
            # move waits for an RCU grace period, milliseconds its setup hides. GO waits queued.
            try:
                before_exec(launched.pid)
            except OSError:
                _raise_reported(sock, launched)  # a child that failed (and said why) before the move
                raise
        self._go(sock)
        message = _receive(sock, launched)
        if not message:
            # End of file before READY: the child died in setup without a report (killed).
            status = launched.wait()
            raise SandboxError("setup", 0, f"child died during setup (return code {status})")
        if message == child.READY:
            # End of file now means the exec happened (or the script is about to run).
            message = _receive(sock, launched)
        if message.startswith(child.TIMINGS):
            steps = json.loads(message[1:])
            if until_exec:
                # agentos-init: confined, it only has to be exec'd, which tears down the forked
                # interpreter's address space (1-4 ms, far more on a loaded host). That overlaps the
                # reply and the first EXEC, which waits in init's socket. A failed exec of our own
                # static program (out of memory) is the agent's death, seen on its pidfd.
                launched.steps = [*steps, ("exec", time.monotonic_ns())]
                return
            message = _receive(sock, launched)
            launched.steps = [*steps, ("exec", time.monotonic_ns())]
        _check_final(message, launched)


    @staticmethod
    def _go(sock: socket.socket) -> None:
        try:
            sock.send(child.GO)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child already gave up: its error record is still ours to read


def _mount_point() -> str:
    """The directory agents mount their new root on: one per uid, shared, never removed.

    Each agent mounts a tmpfs on it inside its own mount namespace, so on the host
    it stays an empty directory (like /tmp/.X11-unix) and nothing accumulates even
    when a kernel is killed. Its parent is private to this uid, so no one else can
    swap it for a symlink; its path is resolved, as the child follows none in a view.
    """
    parent = os.path.join(os.path.realpath(tempfile.gettempdir()), f"agentos-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(parent, 0o700)
    info = os.lstat(parent)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise SandboxError("start", errno.EPERM, f"{parent} is not a directory private to uid {os.geteuid()}")
    root = os.path.join(parent, "root")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o755)
    return root


def _send_request(sock: socket.socket, argv: list[str], env: dict[str, str]) -> None:
    """Queue the child's first message: its argv and env (it reads them before anything else)."""
    message = json.dumps([argv, env]).encode()
    if len(message) > child.MAX_REQUEST:
        raise SandboxError("spec", errno.E2BIG, f"argv and env take {len(message)} bytes, "
                           f"more than the {child.MAX_REQUEST} an agent is started with")
    try:
        sock.send(message)
    except OSError as exc:  # a host whose socket buffers are smaller than usual
        raise SandboxError("spec", exc.errno or errno.EMSGSIZE, f"argv and env ({len(message)} bytes) do not "
                           f"fit in one message: {exc.strerror}") from None


def _explained(error: SandboxError, isolation: dict[str, object]) -> SandboxError:
    """What to do about a failure whose cause is not obvious from the step alone."""
    if error.step.startswith("idmap ") and error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
        path = error.step.removeprefix("idmap ")
        return SandboxError(error.step, error.errno, (
            f"{error.message}: agents of a root kernel run as uid {isolation['uid']}, and {path} is "
            "bound into the view idmapped (its owner shown as the agent), which its file system does "
            "not support; put it on a file system that does (ext4, xfs, btrfs, tmpfs, overlayfs...), "
            "make it usable by others (read-only paths: world-readable), or run the kernel as an "
            "ordinary user (rootless), whose agents run as that user"))
    return error


def _receive(sock: socket.socket, launched: Launched) -> bytes:
    """One handshake message ('' at end of file)."""
    try:
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            # The child exited without reading our GO: the socket reports that first, then
            # still hands over the error record the child sent before it exited.
            return sock.recv(4096)
    except TimeoutError:
        raise SandboxError("handshake", errno.ETIMEDOUT,
                           f"child {launched.pid} not ready after {sock.gettimeout()} s") from None


def _raise_reported(sock: socket.socket, launched: Launched) -> None:
    """Raise the error record the child left on the handshake socket, if it did (read without
    waiting: a child that is still setting up has said nothing yet)."""
    while True:
        try:
            message = sock.recv(4096, socket.MSG_DONTWAIT)
        except OSError:
            return
        if not message:
            return
        if message.startswith(child.ERROR):
            _check_final(message, launched)


def _check_final(message: bytes, launched: Launched) -> None:
    """The child's last word: end of file (it runs), or why it could not."""
    if message.startswith(child.ERROR):
        raise _explained(SandboxError(*json.loads(message[1:])), launched.isolation)
    if message:
        raise SandboxError("handshake", errno.EPROTO, f"unexpected message {message[:16]!r}")


def _inside(sock: socket.socket, joiner: Launched) -> Launched:
    """The process a joiner forked inside the agent's pid namespace, once the joiner is reaped."""
    message = _receive(sock, joiner)
    if not message.startswith(child.ENTERED):
        joiner.wait()
        _check_final(message or child.ERROR + b'["setup", 0, "child died before entering the agent"]', joiner)
    pid = int(message[len(child.ENTERED):])
    joiner.wait()
    joiner.close()
    try:
        pidfd = linux.pidfd_open(pid)
    except OSError:
        # Ours to reap (CLONE_PARENT), whatever went wrong.
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | _WALL)
        raise
    return Launched(pid=pid, pidfd=pidfd, isolation=joiner.isolation)


def _discard(launched: Launched) -> None:
    """Kill and reap a child whose launch failed, and close its pidfd."""
    try:
        if launched.returncode is None:
            try:
                linux.pidfd_send_signal(launched.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            launched.wait()
    finally:
        launched.close()

