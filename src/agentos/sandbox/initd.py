"""The kernel's side of ``agentos-init``, the pid 1 of a sandbox (``_fast/init/agentos_init.c``).

A sandbox's main program is this small C program instead of an idle interpreter. It is exec'd
at the end of the sandbox's usual setup, so it holds the sandbox's namespaces, cgroup, uid,
seccomp filter, Landlock domain and no_new_privs; it reaps the orphans of its pid namespace and
starts the EXECs into the sandbox: per exec, one fork (the exec's leader: session, process
group, child subreaper, a Landlock layer of its own with the agent's rules) and one execve. No
zygote, no namespace joining, no cgroup move, no Python: the kernel sends one message.

``InitChannel`` is the kernel's end of init's control socket (a ``SOCK_SEQPACKET`` socketpair
made at spawn: unnamed, close-on-exec in init, never in an exec's descriptors). The protocol is
described in the C file; each exec's own control socket speaks ``subreaper.py``'s (``P<vpid>``,
``S<signal>``, ``K``, end of file), plus ``E`` step NUL errno NUL when the command could not
be started, and ``X<status>`` once the command has ended and its tree is gone: the exec's end,
a process exit and a wake-up of init sooner than init's word. Init reports each leader's end
(``X``) with its raw wait status (the leader is init's child, not the kernel's, so the kernel
cannot reap it itself): the exec's end when its leader died without its own (killed, told K).
"""
from __future__ import annotations

import asyncio
import errno
import functools
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from agentos.sandbox import child, landlock
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import Plan
from agentos.sandbox.spec import Ending, SandboxError

__all__ = ["IDLE", "InitChannel", "binary", "command"]

#: The program a sandbox is spawned with (``Client.sandbox``); the kernel runs init in its place.
IDLE = os.path.join(os.path.dirname(os.path.realpath(__file__)), "idle.py")
#: The control socket's descriptor number in the sandbox.
CONTROL_FD = 4
_MAX_REPLY = 256


def binary() -> str | None:
    """agentos-init's path: next to the compiled syscall module (in the wheel, and in an editable
    install's build tree), so inside every sandbox's view; None where it was not built."""
    path = os.path.join(os.path.dirname(os.path.abspath(str(linux.__file__))), "agentos-init")
    return path if os.access(path, os.X_OK) else None


def command(path: str, connection_fd: int | None = None) -> list[str]:
    """The argv of init: its control socket, then the agent's kernel connection if it has one
    (whose end, as the control socket's, ends the sandbox)."""
    return [path, str(CONTROL_FD), *([str(connection_fd)] if connection_fd is not None else [])]


def _fields(*values: str, step: str = "spec") -> bytes:
    """``values`` each ended by a NUL; one holding a NUL is refused at ``step``."""
    out = bytearray()
    for value in values:
        data = value.encode()
        if b"\0" in data:
            raise SandboxError(step, errno.EINVAL, f"{value[:60]!r} holds a NUL byte")
        out += data + b"\0"
    return bytes(out)


def _exec_message(token: str, terminal: bool, cwd: str, argv: Sequence[str], env: list[str]) -> bytes:
    """E's fields, each ended by a NUL, in one join and one encode (every exec's path); a field
    holding a NUL is refused, at ``cwd`` or ``exec``."""
    fields = [token, "t" if terminal else "", cwd, str(len(argv)), *argv, str(len(env)), *env]
    text = "\0".join(fields)
    if text.count("\0") != len(fields) - 1:
        _fields(cwd, step="cwd")
        _fields(*argv, *env, step="exec")
        _fields(token)
    return b"E" + text.encode() + b"\0"


class InitChannel:
    """The kernel's end of one sandbox init's control socket."""

    def __init__(self, sock: socket.socket, entry: Plan) -> None:
        """``entry`` is the sandbox's entry plan: each exec's Landlock layer takes its rules."""
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Replies awaited, by exec token.
        self._starts: dict[str, asyncio.Future[bytes]] = {}
        #: Execs whose end is reported: their callback, or their ending while none is set yet.
        self._ends: dict[str, Callable[[Ending], None] | Ending | None] = {}
        #: Started execs' control sockets, read for their leader's X (``_leader_spoke``).
        self._watched: dict[str, socket.socket] = {}
        self.closed = False
        if entry.landlock_abi:
            handled, scoped, file_rights, paths = landlock.rules(entry.landlock_abi, entry.writable)
            sock.send(b"L" + _fields(str(handled), str(scoped), str(file_rights),
                                     *(("w" if required else "d") + path for path, required in paths)))
        sock.setblocking(False)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read init's messages on ``loop`` from now on (the end of the sandbox closes the channel)."""
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    async def start(self, token: str, argv: Sequence[str], env: dict[str, str], cwd: str, stdio: Sequence[int],
                    control: socket.socket, leader_control: socket.socket, *, terminal: bool,
                    timeout: float) -> int:
        """Start ``argv`` in the sandbox as exec ``token``: ``stdio`` its three descriptors,
        ``control`` the kernel's end of the exec's control socket (made non-blocking) and
        ``leader_control`` the leader's (sent, then closed). The command's pid in the sandbox once
        it is exec'd. Raises ``SandboxError`` (``cwd``, ``exec``: no such directory or program in
        the sandbox's view; ``fork``: init could not fork, the sandbox is at its pids limit)."""
        if self.closed or self._loop is None:
            raise SandboxError("init", errno.EPIPE, "the sandbox's init has ended")
        message = _exec_message(token, terminal, cwd, argv, [f"{name}={value}" for name, value in env.items()])
        if len(message) > child.MAX_REQUEST:
            raise SandboxError("spec", errno.E2BIG, f"argv and env take {len(message)} bytes, more than the "
                               f"{child.MAX_REQUEST} an exec is started with")
        # The leader's report on the exec's control socket, or init's F: whichever comes first.
        reply: asyncio.Future[bytes] = self._loop.create_future()
        self._starts[token] = reply
        self._ends[token] = None
        control.setblocking(False)
        timer: asyncio.TimerHandle | None = None
        try:
            await self._send(message, [*stdio, leader_control.fileno()])
            # Only the leader holds its end now: its death before a word is our end of file.
            leader_control.close()
            self._loop.add_reader(control.fileno(), self._reported, control, reply)
            # A timer rather than asyncio.timeout: this is every exec's path, and it costs less.
            timer = self._loop.call_later(timeout, _expire, reply, timeout)
            report = await reply
        except BaseException:
            self._ends.pop(token, None)
            if timer is not None:
                self._loop.remove_reader(control.fileno())
            raise
        finally:
            self._starts.pop(token, None)
            if timer is not None:
                timer.cancel()
        if report.startswith(b"P") and report[1:].isdigit():
            # The leader's next word is its command's end: the same reader, another callback.
            self._watched[token] = control
            self._loop.add_reader(control.fileno(), self._leader_spoke, token, control)
            return int(report[1:])
        self._ends.pop(token, None)
        self._loop.remove_reader(control.fileno())
        raise _refusal(report, argv, cwd)

    def _reported(self, control: socket.socket, reply: asyncio.Future[bytes]) -> None:
        """The leader spoke on the exec's control socket, or died without a word (end of file)."""
        report = _read_word(control)
        if report is None:
            return
        if not report:
            # Init's F, if it could not fork, was sent before the socket's end: read it first.
            self._readable()
        if not reply.done():
            reply.set_result(report)

    def _leader_spoke(self, token: str, control: socket.socket) -> None:
        """The leader's X: its command ended and its tree is gone. Its end of file without
        one: it died first, and init's X says how."""
        message = _read_word(control)
        if message is None:
            return
        self._unwatch(token)
        if message.startswith(b"X") and message[1:].isdigit():
            self._ended(token, _ending(int(message[1:])))

    def _unwatch(self, token: str) -> None:
        # Before the exec's control socket is closed (``Execs``, once it has ended).
        control = self._watched.pop(token, None)
        if control is not None and self._loop is not None:
            self._loop.remove_reader(control.fileno())

    def _ended(self, token: str, ending: Ending) -> None:
        """Exec ``token`` ended as ``ending``: its leader said so, or init, whichever came first."""
        if token not in self._ends:
            return
        self._unwatch(token)
        callback = self._ends.pop(token)
        if callable(callback):
            callback(ending)
        else:
            self._ends[token] = ending

    def forget(self, token: str) -> None:
        """Exec ``token`` is over for the kernel (ended, or dropped at shutdown): no word of it
        is awaited any more, and its control socket may be closed."""
        self._unwatch(token)
        self._ends.pop(token, None)

    def on_end(self, token: str, callback: Callable[[Ending], None]) -> None:
        """Call ``callback`` with how exec ``token``'s leader ended (at once if it has)."""
        ending = self._ends.get(token)
        if isinstance(ending, Ending):
            del self._ends[token]
            assert self._loop is not None
            self._loop.call_soon(callback, ending)
        else:
            self._ends[token] = callback

    def signal_group(self, token: str, number: int) -> bool:
        """``number`` to exec ``token``'s process group, by init (which knows its leader unreaped,
        so the group id is still the exec's); False if the exec has ended."""
        if self.closed or not callable(self._ends.get(token)):
            return False
        try:
            self._sock.send(b"G" + _fields(token, str(number)))
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Stop reading; every exec still running ends as killed (its pid namespace took it)."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for token in list(self._watched):
            self._unwatch(token)
        gone = SandboxError("init", errno.EPIPE, "the sandbox's init ended")
        for reply in self._starts.values():
            if not reply.done():
                reply.set_exception(gone)
        ends, self._ends = self._ends, {}
        for callback in ends.values():
            if callable(callback):
                callback(Ending(signal=signal.SIGKILL))

    async def _send(self, message: bytes, fds: list[int]) -> None:
        assert self._loop is not None
        while True:
            try:
                socket.send_fds(self._sock, [message], fds)
                return
            except BlockingIOError:
                writable = self._loop.create_future()
                self._loop.add_writer(self._sock.fileno(), functools.partial(_done, writable))
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self._sock.fileno())
            except OSError as exc:
                raise SandboxError("init", exc.errno or errno.EPIPE, f"the sandbox's init is gone: {exc}") from None

    def _readable(self) -> None:
        while not self.closed:
            try:
                message = self._sock.recv(_MAX_REPLY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self.close()
                return
            self._dispatch(message)

    def _dispatch(self, message: bytes) -> None:
        fields = message[1:].split(b"\0")
        token = fields[0].decode(errors="replace")
        kind = message[:1]
        reply = self._starts.get(token)
        if kind == b"F" and reply is not None:
            if not reply.done() and len(fields) > 2 and fields[2].isdigit():
                step, err = fields[1].decode(errors="replace"), int(fields[2])
                reply.set_exception(SandboxError(step, err, f"init could not start it: {os.strerror(err)}"))
            return
        if kind == b"X" and len(fields) > 1 and fields[1].isdigit():
            self._ended(token, _ending(int(fields[1])))


def _expire(reply: asyncio.Future[bytes], timeout: float) -> None:
    if not reply.done():
        reply.set_exception(SandboxError("handshake", errno.ETIMEDOUT, f"init did not start it within {timeout} s"))


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ending(status: int) -> Ending:
    if os.WIFSIGNALED(status):
        return Ending(signal=os.WTERMSIG(status))
    return Ending(exit_code=os.WEXITSTATUS(status))


def _refusal(report: bytes, argv: Sequence[str], cwd: str) -> SandboxError:
    """The leader's ``E`` record (or its silent death) as the launcher's error."""
    fields = report[1:].split(b"\0") if report.startswith(b"E") else []
    if len(fields) < 2 or not fields[1].isdigit():
        return SandboxError("setup", 0, "the exec's leader died before its command started")
    step, err = fields[0].decode(errors="replace"), int(fields[1])
    subject: Any = {"exec": argv[0], "cwd": cwd}.get(step)
    return SandboxError(step, err, os.strerror(err) + (f": {subject}" if subject is not None else ""))


def _read_word(control: socket.socket) -> bytes | None:
    """A message on an exec's control socket: None if none came yet, empty at its end."""
    try:
        return control.recv(_MAX_REPLY)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
