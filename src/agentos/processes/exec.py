"""EXEC: run a command inside a running agent, confined exactly as the agent is.

The process is forked by the zygote like an agent, joins the agent's namespaces
(``Launcher.enter``), is moved into the agent's cgroup leaf (so the agent's limits
bound both together) and then takes the agent's own confinement steps: its uid, no
capabilities, no_new_privs, Landlock, seccomp. It never holds more than the agent.
In a sandbox whose pid 1 is agentos-init (``sandbox/initd.py``), init forks it instead: it
is born inside, holding all of that, and takes a Landlock layer of its own; one message and
one fork instead of a zygote fork, a namespace join and the confinement steps again.

Each exec is its own session and process group, led by a small subreaper
(``sandbox/subreaper.py``) whose child is the command: what the command orphans is
reaped there, never left to the agent's pid 1 (which may not reap). It ends when the
command ends; what is left of its tree is then killed (an exec that must outlive its
command is a background exec of its own). Its stdout and stderr are pipes read on
the loop into bounded buffers: while a client is attached, a full buffer stops the
reading (the process blocks on its next write); a background exec with nobody
attached keeps the latest output and counts what it dropped.

``user`` runs the command as the agent's own user (the default) or as ``nobody``
(65534), a lesser one, where that takes nothing the agent lacks (``_run_as``).

Wire: EXEC streams one chunk ``0x00`` + JSON ``{id, pid, agent}``, then output
chunks ``0x01`` (stdout) or ``0x02`` (stderr) + raw bytes, then END with the result.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import fcntl
import functools
import json
import logging
import os
import pwd
import secrets
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..errors import Busy, InvalidArgument, NotFound, PermissionDenied, Unavailable
from ..kernel.identity import Identity
from ..kernel.syscalls import Call, Handler
from ..permissions.principal import caller_id
from ..protocol import Op
from ..protocol.requests import (
    FD_ENV,
    MAX_UID,
    RESERVED_ENV_PREFIX,
    ExecInputRequest,
    ExecRequest,
    ExecResizeRequest,
    ExecSignalRequest,
)
from ..sandbox import SandboxError
from ..sandbox.initd import IDLE, InitChannel
from ..sandbox.namespaces import NAMESPACES
from ..sandbox.plan import Plan
from ..sandbox.spec import Ending, reap
from ..units import parse_duration
from .agent import Agent

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes.exec")

#: Output chunk tags: the first byte of every EXEC stream chunk.
INFO, STDOUT, STDERR = 0, 1, 2
#: One read; with its tag it fits the smallest frame limit a client may declare (64 KiB).
_CHUNK = 64 * 1024 - 1
#: What one stream of one exec may hold in the kernel.
_BUFFER = 256 * 1024
#: Reads that empty a pipe whose writers are gone (an escaped writer cannot keep the loop here).
_FINAL_READS = 64
#: Running execs per agent (each holds a few descriptors and two buffers in the kernel).
MAX_RUNNING = 64
#: Ended execs kept for ``attach`` and ``list`` (their results and last output).
KEEP_ENDED = 256
#: Environment an exec'd process never gets from the agent's: it has no kernel connection.
_NOT_INHERITED = (FD_ENV,)
_SHELL = "/bin/sh"
#: The one user an exec may take instead of its agent's: nobody/nogroup, the overflow ids.
NOBODY = 65534
#: Namespaces that must be the agent's own for ``nobody`` to reach nothing the agent cannot:
#: outside them it would meet the host's processes, IPC objects, files and sockets of nobody.
_LESSER_USER_NEEDS = ("pid", "mount", "ipc", "net")
#: Pipe execs whose descriptors are kept made ahead (``Execs._restock``).
_SPARE = 1
#: (the kernel's ends, the process's ends) of stdin, stdout and stderr, and the kernel's and the
#: exec's ends of its control socket.
_Plumbing = tuple[list[int], list[int], socket.socket, socket.socket]
#: How long an exec's subreaper has to kill its tree once told (it is the exec's own, so the
#: command may have stopped it) before the kernel kills its process group itself.
_STOP_GRACE = 5.0
#: ``run_code``'s interpreter, run by this kernel's Python: forked warm by the agent's zygote
#: (``_warm_script``), the one EXEC that is never a new program.
_INTERPRETER = os.path.join(os.path.dirname(IDLE), "interpreter.py")


class Output:
    """One pipe (or a terminal's master side) of an exec'd process, read on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.buffer = bytearray()
        self.dropped = 0
        self.eof = False
        #: A client takes the output: a full buffer pauses reading instead of dropping.
        self.attached = False
        #: The process group is gone: an empty pipe now is the end (whoever escaped the group
        #: and still holds it is not waited for).
        self.finishing = False
        self._waiter: asyncio.Future[None] | None = None
        self._reading = True
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self._read()
        if len(self.buffer) >= _BUFFER and not self.eof:
            if self.attached:
                self._pause()
            else:
                excess = len(self.buffer) - _BUFFER
                del self.buffer[:excess]
                self.dropped += excess

    def _read(self) -> bool:
        """One read; False when the pipe is empty for now."""
        try:
            data = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            if self.finishing:
                self.close()
            return False
        except OSError:  # EIO: a terminal whose last slave closed
            data = b""
        if data:
            self.buffer += data
        else:
            self.close()
        self._wake()
        return bool(data)

    async def take(self) -> bytes | None:
        """The next output, waiting for it; None at the end."""
        while (data := self.poll()) is None:
            if self.eof:
                return None
            waiter = self.loop.create_future()
            self.notify(waiter)
            try:
                await waiter
            finally:
                self.notify(None)
        return data

    def poll(self) -> bytes | None:
        """The next output if there is some now; None if not (at the end too: then ``eof``)."""
        if not self.buffer and not (self.finishing and not self.eof and self._read()):
            return None
        data = bytes(self.buffer[:_CHUNK])
        del self.buffer[:len(data)]
        if not self._reading and not self.eof:
            self._reading = True
            self.loop.add_reader(self.fd, self._readable)
        return data

    def notify(self, waiter: asyncio.Future[None] | None) -> None:
        """Complete ``waiter`` when output or the end comes (one future may wait on several
        outputs); None: no longer."""
        self._waiter = waiter

    def finish(self) -> None:
        """The process group is gone: read what it left (a pipe's worth), then the end."""
        self.finishing = True
        for _ in range(_FINAL_READS):
            if self.eof or not self._reading:
                break
            self._readable()
        self._wake()

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.fd)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if not self.eof:
            self.eof = True
            self._pause()
            os.close(self.fd)
            self._wake()


@dataclasses.dataclass(eq=False)
class Exec:
    """One process started by EXEC, until it is forgotten."""

    id: str
    agent: Agent
    argv: list[str]
    #: The exec's process (the command's subreaper) on the host and a pidfd of it, ours to reap;
    #: 0 and -1 for one a sandbox's init started (init's child: init reaps it and reports).
    pid: int
    pidfd: int
    #: Its pid in the agent's view.
    vpid: int | None
    #: Output by tag (a terminal has one: stdout).
    outputs: dict[int, Output]
    stdin: int
    #: The terminal's master side while a ``pty`` exec runs (for EXEC_RESIZE), else -1.
    terminal: int
    pty: bool
    background: bool
    #: The uid the command runs as.
    uid: int
    #: The kernel's end of the subreaper's control socket (None: the command is the exec's
    #: process itself, when the agent had no pid left for a subreaper).
    control: socket.socket | None = None
    #: The sandbox's init that started it and reaps its leader (None: the kernel's own child).
    init: InitChannel | None = None
    #: Its callback on the agent's end, taken off when it ends (a sandbox serving a million
    #: execs must not hold a million of them).
    on_agent_end: Callable[[object], None] | None = None
    stop_timer: asyncio.TimerHandle | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    #: The agent's OOM kills when it started; at its end, whether one of them was its own.
    oom_kills: int = 0
    oom_killed: bool = False
    timer: asyncio.TimerHandle | None = None
    attached: bool = False
    ended: asyncio.Future[None] = dataclasses.field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    input_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        return self.ended_at is None

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent.id, "name": self.agent.name, "argv": self.argv,
                "pid": self.vpid, "user": self.uid, "status": "running" if self.running else "ended",
                "background": self.background, "pty": self.pty,
                "started_at": self.started_at, "ended_at": self.ended_at, "exit_code": self.exit_code,
                "signal": self.signal, "timed_out": self.timed_out, "oom_killed": self.oom_killed,
                "dropped": {_NAMES[tag]: out.dropped for tag, out in self.outputs.items()}}


_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


class Execs:
    """The EXEC syscalls of the processes service, and every exec it started."""

    def __init__(self, service: ProcessService) -> None:
        self.service = service
        self._execs: dict[str, Exec] = {}
        #: Ended execs, oldest first (``_prune`` forgets the oldest past ``KEEP_ENDED``).
        self._ended: dict[str, Exec] = {}
        #: Running execs per agent id (``MAX_RUNNING``).
        self._running: dict[str, int] = {}
        #: Descriptors made ahead for the next pipe execs (``_restock``).
        self._spare: list[_Plumbing] = []
        self._restocking = False
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.kernel.loop

    def syscalls(self) -> dict[Op, Handler]:
        return {Op.EXEC: self.exec, Op.EXEC_INPUT: self.input, Op.EXEC_SIGNAL: self.signal,
                Op.EXEC_RESIZE: self.resize}

    def close(self) -> None:
        """At shutdown, once every agent has ended: nothing of an exec may outlive the kernel."""
        self._closed = True
        for ours, theirs, control, control_theirs in self._spare:
            for fd in (*ours, *theirs):
                os.close(fd)
            control.close()
            control_theirs.close()
        self._spare.clear()
        for ex in list(self._execs.values()):
            if ex.running:
                _killpg(ex, signal.SIGKILL)
                if ex.init is None:
                    self.loop.remove_reader(ex.pidfd)
                    os.waitid(os.P_PIDFD, ex.pidfd, os.WEXITED)
                self._reaped(ex, None)
            self._forget(ex)

    # -- syscalls --------------------------------------------------------------------

    async def exec(self, call: Call) -> Any:
        """Start a process in an agent (streamed, or ``background``), ``attach`` to one, or ``list``."""
        request = cast(ExecRequest, call.request)
        if request.listing is True:
            return self._list(call.identity, request)
        if request.attach not in (UNSET, None):
            ex = self._find(call.identity, request.attach)
            return await self._attach(call, ex)
        ex = await self._start(call.identity, request)
        if ex.background:
            return ex.info()
        try:
            return await self._attach(call, ex)
        finally:
            # A client that goes away takes its foreground command with it.
            self._stop(ex)

    async def input(self, call: Call) -> dict[str, Any]:
        """Write to a running exec's stdin, in order, as fast as it reads; ``eof`` closes it."""
        request = cast(ExecInputRequest, call.request)
        ex = self._find(call.identity, request.exec)
        data = _bytes(request.data, request.data_base64, "data")
        async with ex.input_lock:
            written = await self._write(ex, data)
            if request.eof is True and ex.stdin >= 0:
                if ex.pty:
                    await self._write(ex, b"\x04")  # a terminal's end of input is its EOF character
                else:
                    self._close_stdin(ex)
        return {"id": ex.id, "written": written, "closed": ex.stdin < 0}

    async def signal(self, call: Call) -> dict[str, Any]:
        """A signal to the exec's process group (``group: false``: its main process only)."""
        request = cast(ExecSignalRequest, call.request)
        ex = self._find(call.identity, request.exec)
        number = _signal_number(request.signal)
        delivered = False
        if ex.running:
            if request.group is False:
                delivered = _signal_command(ex, number)
            elif number == signal.SIGKILL:
                # Its whole tree, setsid'd daemons too: the subreaper knows them all.
                delivered = self._stop(ex)
            else:
                delivered = _killpg(ex, number)  # the subreaper ignores it; its group gets it
        return {"id": ex.id, "signal": number, "delivered": delivered}

    async def resize(self, call: Call) -> dict[str, Any]:
        """A new size for a ``pty`` exec's terminal (its process group gets SIGWINCH)."""
        request = cast(ExecResizeRequest, call.request)
        ex = self._find(call.identity, request.exec)
        if not ex.pty:
            raise InvalidArgument(f"exec {ex.id} has no terminal (start it with pty)", field="exec")
        if ex.terminal >= 0:
            _set_size(ex.terminal, request.rows, request.cols)
        return {"id": ex.id, "rows": request.rows, "cols": request.cols}

    # -- starting --------------------------------------------------------------------

    async def _start(self, identity: Identity, request: ExecRequest) -> Exec:
        agent = self._target(identity, request.fields())
        argv = _argv(request)
        env = _env(request)
        stdin = _bytes(request.stdin, request.stdin_base64, "stdin")
        timeout = None if request.timeout in (UNSET, None) else _timeout(request.timeout)
        if not agent.running or not agent.local_process:
            raise Unavailable(f"agent {agent.name!r} is not running ({agent.status})", id=agent.id,
                              status=agent.status)
        if agent.holds:
            raise Unavailable(f"agent {agent.name!r} is paused: RESUME it first (a process joining its "
                              "frozen cgroup would freeze before it starts)", id=agent.id, status="paused")
        entry = agent.entry
        if entry is None:
            raise Unavailable(f"agent {agent.name!r} was not started by this kernel's launcher", id=agent.id)
        if self._running.get(agent.id, 0) >= MAX_RUNNING:
            raise Busy(f"agent {agent.name!r} already runs {MAX_RUNNING} execs", limit=MAX_RUNNING)
        run_as = _run_as(request.user, entry)
        cwd = entry.cwd if request.cwd in (UNSET, None) else os.path.join(entry.cwd, request.cwd)
        pty = request.pty if request.pty not in (UNSET, None) else None
        ours, theirs, control, control_theirs = self._plumbing(pty is not None)
        if pty is not None:
            _set_size(ours[0], pty.rows, pty.cols)
        exec_id = secrets.token_hex(8)
        full_env = {**_inherited(entry.env), **env}
        oom_kills = agent.cgroup.oom_kills()  # one read; its end compares (``_reaped``)
        # A sandbox's init starts it with one fork inside (sandbox/initd.py); another user than
        # the agent's takes the zygote's way, since init holds no privilege to become one.
        script = _warm_script(argv)
        init = (agent.init if run_as is None and script is None and agent.init is not None
                and not agent.init.closed else None)
        command_vpid: int | None = None
        try:
            if init is not None:
                try:
                    command_vpid = await init.start(exec_id, argv, full_env, cwd, theirs, control, control_theirs,
                                                    terminal=pty is not None,
                                                    timeout=self.service.launcher.setup_timeout)
                except SandboxError as exc:
                    if exc.step != "fork":
                        raise
                    # The sandbox is at its pids limit: the zygote's way still gets in (its process is
                    # forked outside the sandbox's cgroup, then moved in), as it did before init.
                    init = None
                    control.close()
                    control_theirs.close()
                    control, control_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                else:
                    pid, pidfd = 0, -1  # init's child, reached through init
            if init is None:
                pid, pidfd = await self._enter(agent, entry, argv, full_env, cwd, theirs, pty is not None, run_as,
                                               control_theirs.fileno(), script)
        except SandboxError as exc:
            for fd in ours:
                os.close(fd)
            control.close()
            raise _refused(exc, agent, run_as) from None
        except BaseException:
            for fd in ours:
                os.close(fd)
            control.close()
            raise
        finally:
            control_theirs.close()
            for fd in set(theirs):
                os.close(fd)
        if init is None:
            command_vpid = _subreaper_report(control)
            if command_vpid is None:
                control.close()
        if pty is not None:
            master = ours[0]
            outputs = {STDOUT: Output(self.loop, os.dup(master))}
            stdin_fd, terminal = master, os.dup(master)
        else:
            outputs = {STDOUT: Output(self.loop, ours[1]), STDERR: Output(self.loop, ours[2])}
            stdin_fd, terminal = ours[0], -1
        os.set_blocking(stdin_fd, False)
        ex = Exec(id=exec_id, agent=agent, argv=argv, pid=pid, pidfd=pidfd,
                  vpid=_inner_pid(pid) if command_vpid is None else command_vpid,
                  outputs=outputs, stdin=stdin_fd, terminal=terminal, pty=pty is not None,
                  background=request.background is True, uid=_own_uid(entry) if run_as is None else run_as[0],
                  control=None if command_vpid is None else control, init=init, oom_kills=oom_kills)
        self._execs[ex.id] = ex
        self._running[agent.id] = self._running.get(agent.id, 0) + 1
        if init is not None:
            init.on_end(ex.id, functools.partial(self._init_reaped, ex))
        else:
            self.loop.add_reader(ex.pidfd, self._on_exit, ex)
        ex.on_agent_end = functools.partial(self._agent_ended, ex)
        agent.ended.add_done_callback(ex.on_agent_end)
        if timeout is not None:
            ex.timer = self.loop.call_later(timeout, self._time_out, ex)
        # At INFO, one line per exec, at its end, naming its command: two lines cost a sandbox's
        # exec round trip a tenth of its kernel time.
        log.debug("exec %s in agent %s (%s): pid %s, %s", ex.id, agent.name, agent.id,
                  ex.pid or f"{ex.vpid} in the sandbox", argv)
        if stdin:
            self.service._spawn_background(self._initial_input(ex, stdin, request.stdin_open is True))
        elif request.stdin_open is not True and not ex.pty:
            self._close_stdin(ex)  # nothing to write: its end of input now
        return ex

    def _plumbing(self, terminal: bool) -> _Plumbing:
        """An exec's descriptors; a pipe exec's were made ahead (``_restock``)."""
        if terminal:
            return _new_plumbing(True)
        plumbing = self._spare.pop() if self._spare else _new_plumbing(False)
        if not self._restocking:
            self._restocking = True
            self.loop.call_soon(self._restock)
        return plumbing

    def _restock(self) -> None:
        """Make the next pipe exec's descriptors (three pipes and a socketpair, 0.05-0.1 ms of
        syscalls here) off its path: scheduled as an exec takes the spare set, this runs once
        that exec waits for its command to start."""
        self._restocking = False
        while not self._closed and len(self._spare) < _SPARE:
            try:
                self._spare.append(_new_plumbing(False))
            except OSError:
                return  # out of descriptors: the next exec makes its own (and says so)

    async def _enter(self, agent: Agent, entry: Plan, argv: list[str], env: dict[str, str], cwd: str,
                     stdio: list[int], terminal: bool, run_as: tuple[int, int] | None,
                     control: int, script: str | None = None) -> tuple[int, int]:
        """Start the exec the zygote's way (``Launcher.enter``; ``script`` run warm): its (pid,
        pidfd), our child."""
        target = agent.open_pidfd()
        start = functools.partial(
            self.service.launcher.enter, entry, target, argv, env, cwd, stdin_fd=stdio[0], stdout_fd=stdio[1],
            stderr_fd=stdio[2], terminal=terminal, before_exec=agent.cgroup.attach, run_as=run_as,
            control_fd=control, python_script=script)
        try:
            launched = await self.loop.run_in_executor(None, start)
        finally:
            os.close(target)
        return launched.pid, launched.pidfd

    async def _initial_input(self, ex: Exec, data: bytes, keep_open: bool) -> None:
        async with ex.input_lock:
            await self._write(ex, data)
            if not keep_open and not ex.pty:
                self._close_stdin(ex)

    # -- attached clients ------------------------------------------------------------

    async def _attach(self, call: Call, ex: Exec) -> dict[str, Any]:
        """Stream the exec's output (what is buffered, then as it comes) and end with its result."""
        if ex.attached:
            raise Busy(f"exec {ex.id} already has a client attached", id=ex.id)
        call.open_stream()
        ex.attached = True
        for output in ex.outputs.values():
            output.attached = True
        try:
            await call.stream(bytes([INFO]) + json.dumps(
                {"id": ex.id, "pid": ex.vpid, "agent": ex.agent.id}).encode())
            await self._pump(call, ex)
        finally:
            ex.attached = False
            for output in ex.outputs.values():
                output.attached = False
        return ex.info()

    async def _pump(self, call: Call, ex: Exec) -> None:
        """Every output's chunks as they come, until each has ended and so has the exec: one
        coroutine for all of an exec's outputs (no task per stream), which takes from each in
        turn. The exec's end wakes it too (``_reaped`` finishes every output)."""
        outputs = [(bytes([tag]), output) for tag, output in ex.outputs.items()]
        while True:
            idle = True
            for prefix, output in outputs:
                data = output.poll()
                if data is not None:
                    idle = False
                    await call.stream(prefix + data)  # waits while the client does not read
            if idle:
                if ex.ended.done() and all(output.eof for _, output in outputs):
                    return
                waiter = self.loop.create_future()
                for _, output in outputs:
                    output.notify(waiter)
                try:
                    await waiter
                finally:
                    for _, output in outputs:
                        output.notify(None)

    # -- stdin -----------------------------------------------------------------------

    async def _write(self, ex: Exec, data: bytes) -> int:
        view = memoryview(data)
        written = 0
        while written < len(view) and ex.stdin >= 0:
            try:
                written += os.write(ex.stdin, view[written:written + 65536])
            except BlockingIOError:
                await self._writable(ex)
            except (BrokenPipeError, OSError):
                self._close_stdin(ex)
        return written

    async def _writable(self, ex: Exec) -> None:
        fd = ex.stdin
        ready: asyncio.Future[None] = self.loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(fd, writable)
        ended = asyncio.ensure_future(asyncio.shield(ex.ended))
        try:
            await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if ex.stdin == fd:
                self.loop.remove_writer(fd)

    def _close_stdin(self, ex: Exec) -> None:
        if ex.stdin >= 0:
            self.loop.remove_writer(ex.stdin)
            os.close(ex.stdin)
            ex.stdin = -1

    # -- the end ---------------------------------------------------------------------

    def _time_out(self, ex: Exec) -> None:
        ex.timer = None
        if ex.running:
            ex.timed_out = True
            log.info("exec %s ran past its timeout: its tree is killed", ex.id)
            self._stop(ex)

    def _agent_ended(self, ex: Exec, _: object) -> None:
        # Its pid namespace or cgroup took it already; without them its tree has to go.
        self._stop(ex)

    def _stop(self, ex: Exec) -> bool:
        """SIGKILL the exec's whole tree: told to its subreaper, which kills and reaps every
        descendant and dies of SIGKILL; its process group is killed if it is slow (stopped)
        or absent. False if the exec had ended."""
        if not ex.running:
            return False
        if ex.stop_timer is not None:
            return True  # told already
        if ex.control is not None:
            try:
                ex.control.send(b"K")
            except OSError:
                pass  # gone already: its group is all there is to kill
            else:
                ex.stop_timer = self.loop.call_later(_STOP_GRACE, _killpg, ex, signal.SIGKILL)
                return True
        return _killpg(ex, signal.SIGKILL)

    def _on_exit(self, ex: Exec) -> None:
        # Still a zombie: its group id cannot be reused while the rest of the group is killed.
        _killpg(ex, signal.SIGKILL)
        ending = reap(ex.pidfd)
        if ending is None:
            return
        self.loop.remove_reader(ex.pidfd)
        self._reaped(ex, ending)

    def _init_reaped(self, ex: Exec, ending: Ending) -> None:
        # Its init reaped its leader (after killing what its group left), or ended itself.
        if ex.running:
            self._reaped(ex, ending)

    def _reaped(self, ex: Exec, ending: Ending | None) -> None:
        if ex.pidfd >= 0:
            os.close(ex.pidfd)
            ex.pidfd = -1
        self._running[ex.agent.id] -= 1
        if not self._running[ex.agent.id]:
            del self._running[ex.agent.id]
        if ex.on_agent_end is not None:
            ex.agent.ended.remove_done_callback(ex.on_agent_end)
            ex.on_agent_end = None
        self._ended[ex.id] = ex
        if ending is not None:
            ex.exit_code, ex.signal = ending.exit_code, ending.signal
        if ex.signal == signal.SIGKILL and not ex.timed_out:
            # The kill is counted before the OOM killer's SIGKILL is sent, so before any end.
            ex.oom_killed = ex.agent.cgroup.oom_kills() > ex.oom_kills
        ex.ended_at = time.time()
        for timer in (ex.timer, ex.stop_timer):
            if timer is not None:
                timer.cancel()
        ex.timer = ex.stop_timer = None
        if ex.init is not None:
            ex.init.forget(ex.id)  # its control socket is read there until now
        if ex.control is not None:
            ex.control.close()
            ex.control = None
        self._close_stdin(ex)
        if ex.terminal >= 0:
            os.close(ex.terminal)
            ex.terminal = -1
        for output in ex.outputs.values():
            output.finish()
        ex.ended.set_result(None)
        # Once its client has the result: the wake-up of the exec's stream is queued already,
        # and its END goes out at once (a tenth of the end's path on the loop here).
        self.loop.call_soon(_log_end, ex)
        self._prune()

    def _prune(self) -> None:
        while len(self._ended) > KEEP_ENDED:
            # The oldest whose output nobody is still reading.
            oldest = next((ex for ex in self._ended.values() if not ex.attached), None)
            if oldest is None:
                return
            self._forget(oldest)

    def _forget(self, ex: Exec) -> None:
        self._execs.pop(ex.id, None)
        self._ended.pop(ex.id, None)
        for output in ex.outputs.values():
            output.close()

    # -- who may do what -------------------------------------------------------------

    def _may_enter(self, identity: Identity) -> Callable[[Agent], bool]:
        """Into which agents ``identity`` may exec: itself and its descendants; all for an admin.
        ``observe`` is not enough: seeing an agent is not acting inside it."""
        permissions = self.service.permissions
        if permissions.is_admin(identity):
            return lambda agent: True
        me = caller_id(identity)
        return lambda agent: agent.id == identity.agent_id or permissions.is_descendant(agent.id, me)

    def _target(self, identity: Identity, ref: dict[str, Any]) -> Agent:
        may_enter = self._may_enter(identity)
        agent = self.service.lookup(identity, ref, may_enter)
        if not may_enter(agent):
            raise NotFound(f"no agent {ref.get('id') or ref.get('name')!r} that you may exec into "
                           "(yourself and your descendants)",
                           **{k: v for k, v in ref.items() if k in ("id", "name")})
        # Being driven from outside is activity: a sandbox in use is not idle.
        self.service.lifecycle.touch(agent.id)
        return agent

    def _find(self, identity: Identity, exec_id: str) -> Exec:
        ex = self._execs.get(exec_id)
        if ex is None or not self._may_enter(identity)(ex.agent):
            raise NotFound(f"no exec {exec_id!r} that you may reach", exec=exec_id)
        self.service.lifecycle.touch(ex.agent.id)
        return ex

    def _list(self, identity: Identity, request: ExecRequest) -> dict[str, Any]:
        may = self._may_enter(identity)
        agent = None
        if request.id not in (UNSET, None) or request.name not in (UNSET, None):
            agent = self._target(identity, request.fields())
        return {"execs": [ex.info() for ex in self._execs.values()
                          if may(ex.agent) and (agent is None or ex.agent is agent)]}


# -- helpers ---------------------------------------------------------------------------

def _argv(request: ExecRequest) -> list[str]:
    argv, cmd = request.argv, request.cmd
    if (argv in (UNSET, None)) == (cmd in (UNSET, None)):
        raise InvalidArgument("EXEC takes exactly one of argv (a list) and cmd (a shell command)",
                              field="argv")
    return list(cast(list[str], argv)) if cmd in (UNSET, None) else [_SHELL, "-c", cmd]


def _warm_script(argv: list[str]) -> str | None:
    """The script an EXEC runs warm, in a fork of the agent's zygote: ``run_code``'s interpreter
    starts with the zygote's modules (its template's preload too) already imported, confined by
    the same steps as any exec. None: the command is exec'd."""
    return _INTERPRETER if argv == [sys.executable, _INTERPRETER] else None


def _inherited(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in _NOT_INHERITED}


def _env(request: ExecRequest) -> dict[str, str]:
    env = {} if request.env in (UNSET, None) else dict(request.env)
    for name in env:
        if name.startswith(RESERVED_ENV_PREFIX):
            raise InvalidArgument(f"env: {name}: names starting {RESERVED_ENV_PREFIX} are the kernel's",
                                  field=f"env.{name}")
    return env


def _bytes(text: Any, encoded: Any, field: str) -> bytes:
    given_text, given_b64 = text not in (UNSET, None), encoded not in (UNSET, None)
    if given_text and given_b64:
        raise InvalidArgument(f"give {field} or {field}_base64, not both", field=field)
    if given_b64:
        try:
            return base64.b64decode(cast(str, encoded), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field}_base64 is not base64", field=f"{field}_base64") from None
    return cast(str, text).encode() if given_text else b""


def _timeout(value: Any) -> float:
    try:
        seconds = parse_duration(value, "timeout")
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="timeout") from None
    if seconds <= 0:
        raise InvalidArgument(f"timeout: must be more than 0 seconds, got {value!r}", field="timeout")
    return seconds


def _signal_number(value: int | str) -> int:
    if isinstance(value, int):
        return value
    name = value if value.startswith("SIG") else f"SIG{value}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"signal: no signal named {value!r}", field="signal") from None


def _new_plumbing(terminal: bool) -> _Plumbing:
    """(the kernel's ends, the process's ends) of stdin, stdout, stderr; then the kernel's and
    the exec's ends of its control socket."""
    control, control_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if terminal:
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        os.set_inheritable(slave, False)
        return [master], [slave, slave, slave], control, control_theirs
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    return [stdin_w, out_r, err_r], [stdin_r, out_w, err_w], control, control_theirs


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _run_as(user: Any, entry: Plan) -> tuple[int, int] | None:
    """The (uid, gid) an exec's ``user`` names; None for the agent's own user.

    An exec never holds more than its agent: it may be the agent's user or ``nobody``, and
    nobody only where that uid reaches nothing the agent cannot (``_no_lesser_user``).
    """
    if user in (UNSET, None):
        return None
    own = _own_uid(entry)
    uid = _uid_of(user, own)
    if uid == own:
        return None
    if uid != NOBODY:
        raise PermissionDenied(
            f"user {user!r}: an exec runs as its agent's user (uid {own}) or as nobody ({NOBODY}), never as "
            f"{'root' if uid == 0 else f'another user (uid {uid})'}: that would hold what the agent does not",
            field="user", uid=uid)
    why = _no_lesser_user(entry, own)
    if why:
        raise PermissionDenied(f"user {user!r}: not in this agent: {why}", field="user", uid=uid)
    return NOBODY, NOBODY


def _own_uid(entry: Plan) -> int:
    """The uid the agent (and a default exec) runs as: ``agent_uid`` for a root kernel's
    sandboxed agents, else the kernel's own (inside a rootless agent's user namespace too)."""
    return entry.run_as[0] if entry.run_as else os.geteuid()


def _uid_of(user: int | str, own: int) -> int:
    """``user`` as a uid: a number, ``root``, ``nobody`` or the agent's own user's name."""
    if isinstance(user, int):
        return user
    if user.isdigit():
        if int(user) > MAX_UID:
            raise InvalidArgument(f"user: {user} is not a uid (at most {MAX_UID})", field="user")
        return int(user)
    names = {"root": 0, "nobody": NOBODY}
    own_name = _user_name(own)
    if own_name is not None:
        names[own_name] = own
    if user in names:
        return names[user]
    raise PermissionDenied(f"user {user!r}: an exec runs as its agent's user ({own_name or 'uid'} {own}) or "
                           f"as nobody ({NOBODY}), no other user", field="user")


@functools.cache
def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _no_lesser_user(entry: Plan, own: int) -> str | None:
    """Why ``nobody`` would reach something the agent cannot, or cannot be had at all; None if fine."""
    if entry.join & NAMESPACES["user"]:
        return (f"its user namespace (a kernel that is not root) maps only uid {own}, so no other "
                "user exists in it")
    if os.geteuid() != 0:
        return "the kernel is not root, so it cannot give an exec another uid"
    if not entry.sandboxed:
        return None  # the agent is root: nobody holds less
    shared = [name for name in _LESSER_USER_NEEDS if not entry.join & NAMESPACES[name]]
    if shared:
        return (f"it shares the host's {', '.join(shared)} namespace{'s' if len(shared) > 1 else ''}, where "
                f"uid {NOBODY} would reach the host's processes, files or sockets of nobody, which uid "
                f"{own} cannot")
    return None


def _subreaper_report(control: socket.socket) -> int | None:
    """The command's pid in the agent's view, as the exec's subreaper said before the launch
    was done; None if there is no subreaper (no pid was left for it: the process is the command)."""
    control.setblocking(False)
    try:
        message = control.recv(64)
    except OSError:
        return None
    return int(message[1:]) if message.startswith(b"P") and message[1:].isdigit() else None


def _signal_command(ex: Exec, number: int) -> bool:
    """``number`` to the command alone (through its subreaper, its parent)."""
    try:
        if ex.control is not None:
            ex.control.send(b"S%d" % number)
        else:
            signal.pidfd_send_signal(ex.pidfd, number)
    except OSError:
        return False
    return True


def _log_end(ex: Exec) -> None:
    log.info("exec %s in agent %s (%s) ended: %s, exit code %s, signal %s%s", ex.id, ex.agent.name,
             ex.agent.id, ex.argv, ex.exit_code, ex.signal, " (timed out)" if ex.timed_out else "")


def _killpg(ex: Exec, sig: int) -> bool:
    """Signal the exec's process group; only while its leader is unreaped (its id is ours, or,
    for a leader a sandbox's init reaps, init's to signal)."""
    if not ex.running:
        return False
    if ex.init is not None:
        return ex.init.signal_group(ex.id, sig)
    try:
        os.killpg(ex.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _inner_pid(pid: int) -> int | None:
    """``pid`` as the agent's processes see it (the last NSpid)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _refused(exc: SandboxError, agent: Agent, run_as: tuple[int, int] | None) -> Exception:
    """A launch failure as the client's error: a missing directory or program is its request's."""
    who = "" if run_as is None else f", as uid {run_as[0]}"
    if exc.step == "cwd":
        return InvalidArgument(f"cwd: {exc.message} (in agent {agent.name!r}'s view{who})", field="cwd")
    if exc.step == "exec":
        return InvalidArgument(f"argv: {exc.message} (in agent {agent.name!r}'s view{who})", field="argv")
    return Unavailable(f"cannot exec in agent {agent.name!r}: {exc}", id=agent.id, step=exc.step)
