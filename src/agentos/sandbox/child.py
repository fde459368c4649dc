"""The child's side: the ordered setup sequence, from birth in new namespaces to the agent.

``run`` is the whole sequence on one screen. Each step is named; the first that
fails sends ``E`` + ``[step, errno, message]`` over the handshake socket and the
child exits, so the parent raises ``SandboxError`` instead of seeing a dead agent.
The first message on that socket is the parent's: the agent's argv and env,
which never pass through the zygote. Before the irreversible part (cgroup
namespace, dropping capabilities, Landlock, seccomp) the child sends ``R`` and
waits for the parent's ``G``, sent once the parent has placed it in its cgroup (which it
does while the child sets up, so ``G`` is usually there already). The handshake
socket closes on exec (or just before the script runs): end of file is the parent's "agent
started".
"""
from __future__ import annotations

import builtins
import errno
import fcntl
import io
import json
import os
import select
import signal
import stat
import sys
import termios
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn, TextIO

from agentos.sandbox import landlock, namespaces, seccomp, subreaper, userns
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import Plan
from agentos.sandbox.spec import symlink_refused

__all__ = ["ENTERED", "ERROR", "GO", "READY", "enter", "run"]

READY = b"R"
#: ``T`` + JSON ``[[step, time.monotonic_ns() at its end], ...]``: the steps' timings, sent just
#: before the agent starts (the kernel's trace shows each step as a span).
TIMINGS = b"T"
#: ``P`` + the pid of the process inside: a joined pid namespace holds only children.
ENTERED = b"P"
GO = b"G"
ERROR = b"E"
#: Exit status of a child whose setup failed (the parent reports the step instead).
SETUP_FAILED = 127
#: Largest first message (argv and env, JSON): below a Unix socket's default send buffer.
MAX_REQUEST = 192 * 1024


def run(plan: Plan, fds: list[int], handshake: int, script: types.CodeType | None = None,
        idmaps: list[int] | None = None) -> NoReturn:
    """Set up the sandbox described by ``plan`` and become the agent; never returns.

    ``script`` is ``plan.python_script`` compiled by the zygote if it is agentos's own (the
    zygote caches those); None for any other, which is compiled here (``compile_script``).
    ``idmaps`` are the user namespaces of ``plan.idmaps``, in order (closed once the view is built).
    """
    child = _Child(handshake)
    step = child.step
    plan.argv, plan.env = step("request", child.receive_request)
    if plan.user_map:
        step("user namespace", userns.map_self, *plan.user_map)
    # Dies with its parent (the kernel), so nothing survives a kernel crash.
    step("pdeathsig", linux.set_pdeathsig, signal.SIGKILL)
    step("session", os.setsid)
    script = _script(plan, child, script)
    fds, control = _split_control(plan, fds)
    child.fd, *idmaps = step("descriptors", _arrange_fds, fds, plan.fd_targets,
                             [handshake, *(idmaps or ()), *control])
    control = [idmaps.pop()] if control else []
    if plan.terminal:
        step("terminal", fcntl.ioctl, 0, termios.TIOCSCTTY, 0)
    if plan.view:
        step("mounts", _build_view, plan.view, tuple(idmaps))
    for fd in idmaps:
        os.close(fd)
    if plan.hostname:
        step("hostname", namespaces.set_hostname, plan.hostname)
    if plan.loopback:
        step("loopback", namespaces.loopback_up)
    step("wait for parent", child.ready_and_wait)
    if plan.cgroup_namespace:
        step("cgroup namespace", namespaces.enter_cgroup_namespace)
    _confine(plan, child)
    child.report_timings()
    _become(plan, child, control, script)


def enter(plan: Plan, fds: list[int], handshake: int, script: types.CodeType | None = None) -> NoReturn:
    """Start a process inside the running agent whose namespaces ``plan.join`` names (EXEC).

    ``fds`` are the descriptors to arrange, then the agent's pidfd. The namespaces are
    joined, not made, and the view is the agent's own; from the cgroup on, the process is
    confined by the same steps as the agent (``_confine``), so it never holds more.
    ``script`` (``plan.python_script`` compiled) runs in this interpreter instead of an exec.
    """
    *fds, target = fds
    fds, control = _split_control(plan, fds)
    child = _Child(handshake)
    step = child.step
    plan.argv, plan.env = step("request", child.receive_request)
    child.fd, target, *control = step("descriptors", _arrange_fds, fds, plan.fd_targets,
                                      [handshake, target, *control])
    script = _script(plan, child, script)
    # One call, user namespace first: in it a rootless kernel holds what joining the others needs.
    step("join namespaces", linux.setns, target, plan.join)
    os.close(target)
    step("enter pid namespace", child.fork_inside)
    step("pdeathsig", linux.set_pdeathsig, signal.SIGKILL)
    step("session", os.setsid)
    if plan.terminal:
        step("terminal", fcntl.ioctl, 0, termios.TIOCSCTTY, 0)
    step("wait for parent", child.ready_and_wait)
    _confine(plan, child)
    _become(plan, child, control, script)


def _script(plan: Plan, child: _Child, script: types.CodeType | None) -> types.CodeType | None:
    """``script``, or ``plan.python_script`` compiled now if the zygote did not (not agentos's
    own): read in the host's view, before the agent's is built or joined."""
    if plan.python_script is None or script is not None:
        return script
    result: types.CodeType = child.step("compile script", compile_script, plan.python_script)
    return result


def open_script(path: str) -> BinaryIO:
    """The agent's script, opened with the kernel's view of the file system: the script itself
    need not be visible inside the sandbox (its directory is, for its imports). So it is opened
    following no symlink (it was checked as its real path: one swapped in since must not choose
    what the kernel reads) and without blocking (nor a FIFO stall its reader)."""
    try:
        fd = linux.open_real(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, symlink_refused(path)) from None
        raise OSError(exc.errno, f"{path}: {exc.strerror}") from None
    f = open(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return f


def compile_script(path: str) -> types.CodeType:
    """The agent's script (``open_script``) compiled."""
    with open_script(path) as f:
        return compile(f.read(), path, "exec")


def _split_control(plan: Plan, fds: list[int]) -> tuple[list[int], list[int]]:
    """(the descriptors to arrange, [the subreaper's control socket] or [])."""
    return (fds[:-1], fds[-1:]) if plan.subreaper else (fds, [])


def _become(plan: Plan, child: _Child, control: list[int], script: types.CodeType | None) -> NoReturn:
    """The last step, once confined: run ``script`` in this interpreter or exec the command,
    under the exec's subreaper when it has one (``control``)."""
    if control:
        _under_subreaper(plan, child, control[0], script)
    if script is not None:
        _run_script(plan, script, child.fd)
    child.step("exec", _exec, plan)
    raise AssertionError("unreachable")


def _under_subreaper(plan: Plan, child: _Child, control: int, script: types.CodeType | None) -> None:
    """Start the command as this process's child (a script: in a fork of this interpreter) and
    become its subreaper (``subreaper.serve``, never returns). Returns when no process can be
    made (the agent is at its ``pids`` limit): then the command runs as the exec's process
    itself, without a subreaper, as the kernel learns from the missing ``P`` message."""
    linux.set_child_subreaper(True)
    command = child.step("exec", _spawn, plan) if script is None else _fork()
    if command is None:
        linux.set_child_subreaper(False)
        os.close(control)
        return
    if command == 0:
        assert script is not None
        os.close(control)  # the subreaper's: what the script runs must not speak for it
        if (plan.sandboxed or plan.run_as) and plan.landlock_abi:
            # A layer of its own, as agentos-init gives a command: what the script runs can
            # neither signal nor ptrace its subreaper, whose death would orphan it out of reach.
            child.step("landlock", landlock.restrict, plan.landlock_abi, plan.writable)
        _run_script(plan, script, child.fd)
    subreaper.serve(command, control, child.fd)


def _fork() -> int | None:
    """``os.fork()``; None when no process can be made."""
    try:
        return os.fork()
    except BlockingIOError:
        return None


def _confine(plan: Plan, child: _Child) -> None:
    """The irreversible steps, after the cgroup move: what the agent, and anything exec'd
    into it, may hold from now on. A ``run_as`` of an exec into an unsandboxed agent (a
    lesser user than the agent's root) is taken the same way."""
    step = child.step
    if plan.sandboxed or plan.run_as:
        uid, gid = plan.run_as or (-1, -1)
        step("capabilities", linux.drop_capabilities, plan.drop_bounding, uid, gid)
        if plan.run_as:
            step("pdeathsig", child.rearm_pdeathsig)
    # As the agent's own user: a directory it cannot enter is an error now, not at its first open.
    step("cwd", os.chdir, plan.cwd)
    if plan.sandboxed or plan.run_as:
        step("no_new_privs", linux.set_no_new_privs)
        if plan.landlock_abi:
            step("landlock", landlock.restrict, plan.landlock_abi, plan.writable)
        if plan.seccomp_program:
            step("seccomp", seccomp.install, plan.seccomp_program)


class _Child:
    """Runs steps and talks to the parent over the handshake socket."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        #: When each step ended; "fork": when this process began to run.
        self.timings: list[tuple[str, int]] = [("fork", time.monotonic_ns())]

    def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            result = fn(*args)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename is not None else ""
            # A step of a compiled program (the view) names itself.
            self.fail(getattr(exc, "step", name), exc.errno or 0, f"{exc.strerror or exc}{where}")
        except BaseException as exc:  # noqa: BLE001 - a setup bug must still reach the parent as a report
            self.fail(name, 0, f"{type(exc).__name__}: {exc}")
        self.timings.append((name, time.monotonic_ns()))
        return result

    def report_timings(self) -> None:
        os.write(self.fd, TIMINGS + json.dumps(self.timings).encode())

    def fail(self, name: str, err: int, message: str) -> NoReturn:
        try:
            os.write(self.fd, ERROR + json.dumps([name, err, message]).encode())
        finally:
            os._exit(SETUP_FAILED)

    def receive_request(self) -> tuple[list[str], dict[str, str]]:
        """The agent's argv and env, which the parent sends the child itself (not the zygote)."""
        argv, env = json.loads(os.read(self.fd, MAX_REQUEST + 1))
        return argv, env

    def rearm_pdeathsig(self) -> None:
        """Changing uid cleared the parent-death signal: set it again, and leave if the parent
        died in between (it holds the handshake socket's other end until the agent starts)."""
        linux.set_pdeathsig(signal.SIGKILL)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLRDHUP)
        if poller.poll(0):
            os._exit(SETUP_FAILED)

    def fork_inside(self) -> None:
        """Continue in a child: joining a pid namespace places only children in it. The child is
        the kernel's (``CLONE_PARENT``), which reaps it; this process tells the kernel its pid
        and leaves."""
        # The child may run first: its READY must not reach the kernel before our ENTERED (the
        # kernel would refuse the exec and never learn the pid of its own child, which then
        # keeps the agent's pid namespace, and its KILL, from ending). It waits for this
        # pipe's end of file: our exit, after the ENTERED.
        reported, report = os.pipe()
        pid, _ = linux.clone3(linux.CLONE_PARENT)
        if pid == 0:
            os.close(report)
            os.read(reported, 1)
            os.close(reported)
            return
        os.write(self.fd, ENTERED + str(pid).encode())
        os._exit(0)

    def ready_and_wait(self) -> None:
        os.write(self.fd, READY)
        if os.read(self.fd, 1) != GO:
            # The parent gave up (or died): never run an agent nobody tracks.
            os._exit(SETUP_FAILED)


class _Refused(OSError):
    """A step of the view refused, and why in words (``step`` names the step)."""

    def __init__(self, step: str, err: int, message: str) -> None:
        super().__init__(err, message)
        self.step = step


def _build_view(view: bytes, idmaps: tuple[int, ...]) -> None:
    try:
        linux.run_view(bytearray(view), idmaps)
    except linux.StepError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise _Refused(exc.step, exc.errno, symlink_refused(exc.filename)) from None


def _arrange_fds(fds: list[int], targets: list[int], private: list[int]) -> list[int]:
    """Put each handed-over fd at its target number and close every other fd.

    Returns the new (close-on-exec) numbers of the ``private`` fds (the handshake socket, ...).
    """
    floor = max(targets) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    private = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in private]
    for fd, target in zip(moved, targets):
        os.dup2(fd, target)  # the copy at ``target`` is inheritable
    keep = sorted({*targets, *private})
    start = 0
    for fd in keep:
        if fd > start:
            linux.close_range(start, fd - 1)
        start = fd + 1
    linux.close_range(start)
    return private


#: Python ignores these; an exec'd program expects the default dispositions.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)


def _exec(plan: Plan) -> None:
    for sig in _DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.execvpe(plan.argv[0], plan.argv, plan.env)


def _spawn(plan: Plan) -> int | None:
    """``_exec`` in a child of this process, its pid; None when no process can be made.

    ``posix_spawn`` (a vfork): nothing of this interpreter is copied or run in the child, and
    a failed exec raises here, as ``_exec``'s would.
    """
    # posix_spawnp searches this process's PATH, as execvpe searches the agent's.
    if "PATH" in plan.env:
        os.environ["PATH"] = plan.env["PATH"]
    else:
        os.environ.pop("PATH", None)
    try:
        return os.posix_spawnp(plan.argv[0], plan.argv, plan.env, setsigdef=_DEFAULT_SIGNALS)
    except BlockingIOError:
        return None


def _run_script(plan: Plan, code: types.CodeType, handshake: int) -> NoReturn:
    """Run the agent's script in this (forked) interpreter as ``__main__``, then exit like Python."""
    assert plan.python_script is not None
    os.environ.clear()
    os.environ.update(plan.env)
    if plan.env.get("PYTHONUNBUFFERED"):
        # Read by an interpreter at start, which this one is long past (the zygote runs with
        # the base environment only): do what ``python -u`` does to the standard streams.
        sys.stdout, sys.stderr = _unbuffered(sys.stdout, 1), _unbuffered(sys.stderr, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.getpid() == 1:
        # pid 1 of a namespace ignores SIGTERM unless it has a handler: give it Python's meaning.
        signal.signal(signal.SIGTERM, _terminate)
    sys.argv = [plan.python_script, *plan.argv[1:]]
    sys.path[0] = os.path.dirname(os.path.abspath(plan.python_script))
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=plan.python_script, __builtins__=builtins, __cached__=None)
    sys.modules["__main__"] = main
    os.close(handshake)
    status = 0
    try:
        exec(code, main.__dict__)  # noqa: S102 - running the agent's script is the point
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:  # noqa: BLE001 - reported like Python's own top level does
        traceback.print_exc()
        status = 1
    _finish(status)


def _unbuffered(stream: TextIO | None, fd: int) -> TextIO:
    encoding, errors = (stream.encoding, stream.errors) if stream is not None else ("utf-8", "strict")
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=encoding,
                            errors=errors, write_through=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish(status: int) -> NoReturn:
    """What interpreter shutdown does that an agent can observe, then exit."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001 - an exit hook failing still ends the process
        traceback.print_exc()
        status = status or 1
    os._exit(status)
