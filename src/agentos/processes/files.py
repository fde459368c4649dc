"""FILE_*: file operations on a running agent, done inside it, as it.

The kernel never touches an agent's files itself (not through ``/proc/<pid>/root`` as
root, which would skip the agent's uid, its Landlock domain and its read-only binds).
It starts a file worker (``agentos/sandbox/fileworker.py``) the way EXEC starts a
process: forked by the zygote, joined to the agent's namespaces, placed in its cgroup,
confined by the agent's own steps. The worker speaks a small framed protocol over a
socketpair; one worker serves one operation at a time, idle workers are kept per agent
for ``processes.files.idle_timeout`` and then stopped, and they all end with their agent.

A streamed write or upload holds its worker from its first request to its last
(``more: true`` answers a ``handle``; FILE_DATA carries the rest).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import json
import logging
import os
import posixpath
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..errors import (
    AlreadyExists,
    Busy,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SyscallError,
    TooLarge,
    Unavailable,
)
from ..kernel.identity import Identity
from ..kernel.syscalls import Call, Handler
from ..permissions.principal import caller_id
from ..protocol import Op
from ..protocol.requests import (
    FileDataRequest,
    FileDownloadRequest,
    FileListRequest,
    FileMkdirRequest,
    FileReadRequest,
    FileRemoveRequest,
    FileRenameRequest,
    FileStatRequest,
    FileUploadRequest,
    FileWatchRequest,
    FileWriteRequest,
)
from ..sandbox import SandboxError, fileworker
from ..sandbox.spec import reap
from ..units import parse_bytes, parse_duration
from .agent import Agent

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes.files")

#: Workers one agent may have at once (operations, streamed writes and watches together).
MAX_WORKERS = 8
_WORKER = os.path.abspath(fileworker.__file__)
_KEYS = ("max_bytes", "idle_timeout", "watch_queue")

_DENIED = {"EACCES", "EPERM", "EROFS", "ELOOP", "EXDEV"}
_FULL = {"ENOSPC", "EDQUOT", "EFBIG"}
_MALFORMED = {"ENOTDIR", "EISDIR", "ENOTEMPTY", "ENAMETOOLONG", "EINVAL", "ETXTBSY"}


@dataclasses.dataclass(frozen=True)
class FileSettings:
    """``processes.files``: bounds of the FILE_* syscalls."""

    #: Largest read, streamed write, upload or download, in bytes.
    max_bytes: int = 256 * 1024 * 1024
    #: An idle worker, or a streamed write nobody continues, ends after this many seconds.
    idle_timeout: float = 30.0
    #: Events a watch holds for a client that does not read them, before it drops (``overflow``).
    watch_queue: int = fileworker.WATCH_QUEUE

    @classmethod
    def from_section(cls, section: Any) -> FileSettings:
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ValueError("processes.files must be a mapping")
        unknown = sorted(set(section) - set(_KEYS))
        if unknown:
            raise ValueError(f"processes.files: unknown setting(s) {unknown}; known: {list(_KEYS)}")
        defaults = cls()
        queue = section.get("watch_queue", defaults.watch_queue)
        if isinstance(queue, bool) or not isinstance(queue, int) or not 1 <= queue <= 1 << 20:
            raise ValueError(f"processes.files.watch_queue must be an integer in 1..{1 << 20}, got {queue!r}")
        idle = parse_duration(section.get("idle_timeout", defaults.idle_timeout), "processes.files.idle_timeout")
        if idle <= 0:
            raise ValueError("processes.files.idle_timeout must be more than 0 seconds")
        max_bytes = parse_bytes(section.get("max_bytes", defaults.max_bytes), "processes.files.max_bytes")
        if max_bytes <= 0:
            raise ValueError("processes.files.max_bytes must be more than 0")
        return cls(max_bytes=max_bytes, idle_timeout=idle, watch_queue=queue)


class WorkerGone(Exception):
    """The worker ended or broke the protocol."""


class Worker:
    """One file worker process inside an agent, and the kernel's end of its socket."""

    def __init__(self, agent: Agent, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.agent, self.pid, self.pidfd, self.sock = agent, pid, pidfd, sock
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: Between a request and its final answer: a worker given up then is killed, not reused.
        self.clean = True
        self.idle_timer: asyncio.TimerHandle | None = None
        self.alive = True

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        assert self.writer is not None
        try:
            self.writer.write(fileworker.HEADER.pack(len(payload), kind[0]) + payload)
            await self.writer.drain()
        except (ConnectionError, OSError):
            raise WorkerGone("the file worker went away") from None

    async def receive(self) -> tuple[bytes, bytes]:
        assert self.reader is not None
        try:
            length, kind = fileworker.HEADER.unpack(await self.reader.readexactly(fileworker.HEADER.size))
            if length > fileworker.MAX_FRAME:
                raise WorkerGone(f"the file worker sent a frame of {length} bytes")
            return bytes([kind]), await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            raise WorkerGone("the file worker went away") from None

    async def request(self, request: dict[str, Any]) -> None:
        self.clean = False
        await self.send(b"Q", json.dumps(request).encode())

    async def final(self) -> dict[str, Any]:
        """The answer that ends a request: its result, or its error raised."""
        kind, payload = await self.receive()
        if kind not in (b"R", b"X"):
            raise WorkerGone(f"the file worker answered {kind!r} where a result belongs")
        self.clean = True
        value = _json(payload)
        if kind == b"X":
            raise _failure(value, self.agent)
        return value

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)


@dataclasses.dataclass(eq=False)
class Session:
    """A streamed write or upload between its first request and its last."""

    id: str
    worker: Worker
    owner: str
    path: str
    total: int
    timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class Files:
    """The FILE_* syscalls of the processes service, and every file worker it started."""

    def __init__(self, service: ProcessService, settings: FileSettings) -> None:
        self.service = service
        self.settings = settings
        self._workers: dict[str, list[Worker]] = {}  # agent id -> its workers
        self._idle: dict[str, list[Worker]] = {}
        self._sessions: dict[str, Session] = {}
        #: Workers being started, per agent (counted against MAX_WORKERS already).
        self._starting: dict[str, int] = {}
        #: Agents whose end is already hooked.
        self._hooked: set[str] = set()
        self._devnull = -1

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.kernel.loop

    def syscalls(self) -> dict[Op, Handler]:
        return {Op.FILE_READ: self.read, Op.FILE_WRITE: self.write, Op.FILE_LIST: self.list,
                Op.FILE_STAT: self.stat, Op.FILE_MKDIR: self.mkdir, Op.FILE_REMOVE: self.remove,
                Op.FILE_RENAME: self.rename, Op.FILE_UPLOAD: self.upload, Op.FILE_DOWNLOAD: self.download,
                Op.FILE_WATCH: self.watch, Op.FILE_DATA: self.data}

    def workers(self, agent_id: str | None = None) -> list[Worker]:
        """Running workers (of one agent): for tests and introspection."""
        if agent_id is not None:
            return list(self._workers.get(agent_id, ()))
        return [w for ws in self._workers.values() for w in ws]

    def close(self) -> None:
        """At shutdown, once every agent has ended: no worker outlives the kernel."""
        for worker in self.workers():
            worker.kill()
            self.loop.remove_reader(worker.pidfd)
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, worker.pidfd, os.WEXITED)
            self._reaped(worker)
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1

    # -- syscalls ---------------------------------------------------------------------

    async def read(self, call: Call) -> Any:
        """Stream a file's bytes (``offset``, ``length``); END is ``{path, size, offset, read, eof}``."""
        request = cast(FileReadRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        length = None if request.length in (UNSET, None) else request.length
        async with self._using(agent) as worker:
            await worker.request({"op": "read", "path": path, "offset": request.offset or 0,
                                  "length": length, "limit": self.settings.max_bytes})
            return await self._stream_data(call, worker, self.settings.max_bytes)

    async def write(self, call: Call) -> Any:
        """Write ``data`` (create, truncate, ``append``, ``offset``, ``mode``); ``more`` streams the rest."""
        request = cast(FileWriteRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        data = _bytes(request.data, request.data_base64)
        if request.append is True and request.offset not in (UNSET, None):
            raise InvalidArgument("give append or offset, not both", field="offset")
        spec: dict[str, Any] = {"op": "write", "path": path, "append": request.append is True,
                                "create": request.create is not False, "exclusive": request.exclusive is True,
                                "offset": None if request.offset in (UNSET, None) else request.offset}
        if request.mode not in (UNSET, None):
            spec["mode"] = request.mode
        return await self._open_session(call.identity, agent, spec, data, request.more is True)

    async def upload(self, call: Call) -> Any:
        """Unpack a tar archive (``data_base64``) into a directory; ``more`` streams the rest."""
        request = cast(FileUploadRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        data = _bytes(None, request.data_base64)
        return await self._open_session(call.identity, agent, {"op": "upload", "path": path}, data,
                                        request.more is True)

    async def data(self, call: Call) -> Any:
        """The next chunk of a streamed write or upload; without ``more``, its last."""
        request = cast(FileDataRequest, call.request)
        session = self._sessions.get(request.handle)
        if session is None or session.owner != caller_id(call.identity):
            raise NotFound(f"no streamed write {request.handle!r} of yours", handle=request.handle)
        data = _bytes(request.data, request.data_base64)
        async with session.lock:
            if self._sessions.get(session.id) is not session:
                raise NotFound(f"no streamed write {request.handle!r} of yours", handle=request.handle)
            self._touch(session)
            return await self._feed(session, data, request.more is True)

    async def list(self, call: Call) -> Any:
        """A directory's entries, ``depth`` levels down: ``{path, entries, truncated}``."""
        request = cast(FileListRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path or ".")
        return await self._simple(agent, {"op": "list", "path": path, "depth": request.depth or 1})

    async def stat(self, call: Call) -> Any:
        request = cast(FileStatRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        return await self._simple(agent, {"op": "stat", "path": path, "follow": request.follow is True})

    async def mkdir(self, call: Call) -> Any:
        request = cast(FileMkdirRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        spec: dict[str, Any] = {"op": "mkdir", "path": path, "parents": request.parents is True}
        if request.mode not in (UNSET, None):
            spec["mode"] = request.mode
        return await self._simple(agent, spec)

    async def remove(self, call: Call) -> Any:
        request = cast(FileRemoveRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        return await self._simple(agent, {"op": "remove", "path": path, "recursive": request.recursive is True})

    async def rename(self, call: Call) -> Any:
        request = cast(FileRenameRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        to = _in_view(cast(str, agent.entry.cwd if agent.entry else "/"), request.to)
        return await self._simple(agent, {"op": "rename", "path": path, "to": to,
                                          "overwrite": request.overwrite is not False})

    async def download(self, call: Call) -> Any:
        """Stream a directory as one tar archive; END is ``{path, entries, bytes}``."""
        request = cast(FileDownloadRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        async with self._using(agent) as worker:
            await worker.request({"op": "download", "path": path, "limit": self.settings.max_bytes})
            # The archive's own bound is the worker's; the kernel's keeps a worker that lies in check.
            return await self._stream_data(call, worker, self.settings.max_bytes)

    async def watch(self, call: Call) -> Any:
        """Stream inotify events under a directory (JSON), until it goes or the client does."""
        request = cast(FileWatchRequest, call.request)
        agent, path = self._resolve(call.identity, request.fields(), request.path)
        async with self._using(agent, reuse=False) as worker:
            await worker.request({"op": "watch", "path": path, "recursive": request.recursive is True,
                                  "queue": self.settings.watch_queue})
            kind, payload = await worker.receive()
            if kind != b"V":
                worker.clean = kind == b"X"
                raise _failure(_json(payload), agent) if kind == b"X" else WorkerGone(f"unexpected {kind!r}")
            call.open_stream()
            await call.stream(_json(payload))
            ended: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(agent.ended))
            frame: asyncio.Future[tuple[bytes, bytes]] | None = None
            try:
                while True:
                    frame = asyncio.ensure_future(worker.receive())
                    await asyncio.wait(cast(list[asyncio.Future[Any]], [frame, ended]),
                                       return_when=asyncio.FIRST_COMPLETED)
                    if not frame.done():
                        frame.cancel()
                        return {"path": path, "ended": f"agent {agent.name!r} ended"}
                    kind, payload = frame.result()
                    if kind == b"V":
                        await call.stream(_json(payload))
                        continue
                    if kind == b"R":
                        return _json(payload)
                    raise _failure(_json(payload), agent) if kind == b"X" else WorkerGone(f"unexpected {kind!r}")
            finally:
                ended.cancel()
                if frame is not None:
                    # A client gone mid-watch: its read dies with the worker, unawaited.
                    frame.cancel()

    # -- doing it --------------------------------------------------------------------

    async def _simple(self, agent: Agent, request: dict[str, Any]) -> dict[str, Any]:
        async with self._using(agent) as worker:
            await worker.request(request)
            return await worker.final()

    async def _stream_data(self, call: Call, worker: Worker, limit: int) -> dict[str, Any]:
        call.open_stream()
        total = 0
        while True:
            kind, payload = await worker.receive()
            if kind != b"D":
                break
            total += len(payload)
            if total > limit:
                raise WorkerGone(f"the file worker sent more than the limit of {limit} bytes")
            await call.stream(payload)  # waits while the client does not read
        if kind not in (b"R", b"X"):
            raise WorkerGone(f"the file worker answered {kind!r}")
        worker.clean = True
        if kind == b"X":
            raise _failure(_json(payload), worker.agent)
        return _json(payload)

    async def _open_session(self, identity: Identity, agent: Agent, spec: dict[str, Any], data: bytes,
                            more: bool) -> dict[str, Any]:
        worker = await self._acquire(agent)
        session = Session(id=secrets.token_hex(8), worker=worker, owner=caller_id(identity),
                          path=spec["path"], total=0)
        try:
            await worker.request(spec)
        except BaseException:
            self._release(worker)
            raise
        self._sessions[session.id] = session
        async with session.lock:
            self._touch(session)
            return await self._feed(session, data, more)

    async def _feed(self, session: Session, data: bytes, more: bool) -> dict[str, Any]:
        """One chunk into the session's worker; the last one (``more`` false) ends it."""
        worker = session.worker
        done = False
        try:
            if session.total + len(data) > self.settings.max_bytes:
                limit = self.settings.max_bytes
                await self._end(session)
                raise TooLarge(f"more than the limit of {limit} bytes (processes.files.max_bytes) for one "
                               f"write; {session.total} bytes were written to {session.path}", limit=limit)
            view = memoryview(data)
            for start in range(0, len(view), fileworker.CHUNK):
                await worker.send(b"D", view[start:start + fileworker.CHUNK].tobytes())
                kind, payload = await worker.receive()
                if kind == b"X":
                    worker.clean = True
                    await worker.send(b"Z")
                    done = True
                    raise _failure(_json(payload), worker.agent)
                if kind != b"A":
                    raise WorkerGone(f"the file worker answered {kind!r} to data")
                session.total += len(view[start:start + fileworker.CHUNK])
            if more:
                return {"handle": session.id, "path": session.path, "written": session.total}
            done = True
            return await self._end(session)
        except BaseException:
            done = True
            raise
        finally:
            if done:
                self._close_session(session)

    async def _end(self, session: Session) -> dict[str, Any]:
        await session.worker.send(b"Z")
        return await session.worker.final()

    def _touch(self, session: Session) -> None:
        if session.timer is not None:
            session.timer.cancel()
        session.timer = self.loop.call_later(self.settings.idle_timeout, self._abandoned, session)

    def _abandoned(self, session: Session) -> None:
        if self._sessions.get(session.id) is session and not session.lock.locked():
            log.info("streamed write %s to %s abandoned: its worker is stopped", session.id, session.path)
            session.worker.clean = False
            self._close_session(session)

    def _close_session(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is session:
            if session.timer is not None:
                session.timer.cancel()
            self._release(session.worker)

    # -- workers ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _using(self, agent: Agent, *, reuse: bool = True) -> AsyncIterator[Worker]:
        worker = await self._acquire(agent)
        try:
            yield worker
        except WorkerGone as exc:
            worker.clean = False
            raise Unavailable(f"file operation in agent {agent.name!r} failed: {exc}", id=agent.id) from None
        finally:
            if not reuse:
                worker.clean = False
            self._release(worker)

    async def _acquire(self, agent: Agent) -> Worker:
        if not agent.running or not agent.local_process:
            raise Unavailable(f"agent {agent.name!r} is not running ({agent.status})", id=agent.id,
                              status=agent.status)
        if agent.holds:
            raise Unavailable(f"agent {agent.name!r} is paused: RESUME it first", id=agent.id, status="paused")
        idle = self._idle.get(agent.id)
        while idle:
            worker = idle.pop()
            if worker.idle_timer is not None:
                worker.idle_timer.cancel()
                worker.idle_timer = None
            if worker.alive:
                return worker
        if len(self._workers.get(agent.id, ())) + self._starting.get(agent.id, 0) >= MAX_WORKERS:
            raise Busy(f"agent {agent.name!r} already has {MAX_WORKERS} file operations or watches running",
                       limit=MAX_WORKERS)
        return await self._start(agent)

    async def _start(self, agent: Agent) -> Worker:
        entry = agent.entry
        if entry is None:
            raise Unavailable(f"agent {agent.name!r} was not started by this kernel's launcher", id=agent.id)
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        target = agent.open_pidfd()
        argv = [sys.executable, "-I", "-S", "-B", _WORKER]
        start = functools.partial(
            self.service.launcher.enter, entry, target, argv, {}, entry.cwd,
            stdin_fd=theirs.fileno(), stdout_fd=theirs.fileno(), stderr_fd=self._devnull,
            before_exec=agent.cgroup.attach)
        self._starting[agent.id] = self._starting.get(agent.id, 0) + 1
        try:
            launched = await self.loop.run_in_executor(None, start)
        except SandboxError as exc:
            ours.close()
            raise Unavailable(f"cannot start a file worker in agent {agent.name!r}: {exc}", id=agent.id,
                              step=exc.step) from None
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(target)
            theirs.close()
            self._starting[agent.id] -= 1
            if not self._starting[agent.id]:
                del self._starting[agent.id]
        worker = Worker(agent, launched.pid, launched.pidfd, ours)
        self._workers.setdefault(agent.id, []).append(worker)
        self.loop.add_reader(worker.pidfd, self._on_exit, worker)
        if agent.id not in self._hooked:
            self._hooked.add(agent.id)
            agent.ended.add_done_callback(functools.partial(self._agent_ended, agent.id))
        try:
            await worker.connect()
        except BaseException:
            worker.kill()
            raise
        return worker

    def _release(self, worker: Worker) -> None:
        if not worker.clean or not worker.alive or not worker.agent.running:
            worker.kill()
            return
        self._idle.setdefault(worker.agent.id, []).append(worker)
        worker.idle_timer = self.loop.call_later(self.settings.idle_timeout, self._stop_idle, worker)

    def _stop_idle(self, worker: Worker) -> None:
        worker.idle_timer = None
        idle = self._idle.get(worker.agent.id, [])
        if worker in idle:
            idle.remove(worker)
            worker.kill()

    def _agent_ended(self, agent_id: str, _: object) -> None:
        self._hooked.discard(agent_id)
        for session in [s for s in self._sessions.values() if s.worker.agent.id == agent_id]:
            session.worker.clean = False
            self._close_session(session)
        for worker in self._workers.get(agent_id, ()):
            worker.kill()

    def _on_exit(self, worker: Worker) -> None:
        if reap(worker.pidfd) is None:
            return
        self.loop.remove_reader(worker.pidfd)
        self._reaped(worker)

    def _reaped(self, worker: Worker) -> None:
        worker.alive = False
        os.close(worker.pidfd)
        if worker.writer is not None:
            worker.writer.close()
        else:
            worker.sock.close()
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
            worker.idle_timer = None
        agent_id = worker.agent.id
        for table in (self._workers, self._idle):
            workers = table.get(agent_id)
            if workers is not None and worker in workers:
                workers.remove(worker)
                if not workers:
                    del table[agent_id]

    # -- who, where ------------------------------------------------------------------

    def _resolve(self, identity: Identity, ref: dict[str, Any], path: str) -> tuple[Agent, str]:
        """The agent (the same rule as EXEC) and ``path`` made absolute in its view."""
        agent = self.service.execs._target(identity, ref)  # noqa: SLF001 - one rule for both, EXEC's
        cwd = agent.entry.cwd if agent.entry is not None else "/"
        return agent, _in_view(cwd, path)


def _in_view(cwd: str, path: str) -> str:
    """A path of the agent's view: relative ones against its working directory. Not normalised:
    ``..`` and symlinks are the worker's to resolve, as the agent's kernel would."""
    return path if path.startswith("/") else posixpath.join(cwd, path)


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WorkerGone("the file worker sent what is not JSON") from None
    if not isinstance(value, dict):
        raise WorkerGone("the file worker sent what is not an object")
    return value


def _bytes(text: Any, encoded: Any) -> bytes:
    if text not in (UNSET, None) and encoded not in (UNSET, None):
        raise InvalidArgument("give data or data_base64, not both", field="data")
    if encoded not in (UNSET, None):
        try:
            return base64.b64decode(cast(str, encoded), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("data_base64 is not base64", field="data_base64") from None
    return cast(str, text).encode() if text not in (UNSET, None) else b""


def _failure(error: Mapping[str, Any], agent: Agent) -> SyscallError:
    """The worker's refusal as the client's error (the worker's words are the agent's, not trusted
    beyond that: only known codes and plain strings pass)."""
    message = str(error.get("message", "refused"))[:1024]
    path = error.get("path") if isinstance(error.get("path"), str) else None
    where = f" ({path} in agent {agent.name!r}'s view)" if path else f" (in agent {agent.name!r})"
    details = {k: str(v)[:4096] for k, v in error.items() if k in ("path", "member") and v is not None}
    code, name = error.get("code"), str(error.get("name", ""))
    if code == "too_large" or name in _FULL:
        return TooLarge(message + where, **details, **({"errno": name} if name else {}))
    if code == "invalid_argument":
        return InvalidArgument(message + where, field=str(error.get("field", "path")), **details)
    if name == "ENOENT":
        return NotFound(message + where, **details)
    if name in _DENIED:
        return PermissionDenied(message + where, errno=name, **details)
    if name == "EEXIST":
        return AlreadyExists(message + where, **details)
    if name in _MALFORMED:
        return InvalidArgument(message + where, field=str(error.get("field", "path")), errno=name, **details)
    return Unavailable(message + where, errno=name or None, **details)

