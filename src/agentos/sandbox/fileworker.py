"""The file worker: file operations done inside an agent, as the agent (the FILE_* syscalls).

The kernel starts it the way EXEC starts a process (``Launcher.enter``: the agent's
namespaces, cgroup, uid, no capabilities, no_new_privs, Landlock, seccomp) and runs it as
``python -I -S fileworker.py``: the standard library only, nothing from the environment,
the agent's working directory or site-packages. So every path is resolved in the agent's
view and every permission is checked against the agent's uid by the host kernel: the
worker can do nothing the agent could not do itself.

Paths are also resolved with ``openat2``: ``RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`` for a
path of the view (``/`` is the view's root; ``/proc/<pid>/root``, ``/proc/self/fd/N`` and their
like are refused with ELOOP), and beneath a directory (tar members, listings) with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` besides, so nothing unpacked or walked leaves it.

Protocol on fd 0 (a stream socket to the kernel; fd 1 is the same socket): frames of a
little-endian u32 length, a kind byte, then the payload. The kernel sends ``Q`` + a JSON
request, then for a session (write, upload) ``D`` + data chunks, each answered ``A``, and
``Z`` for the end. The worker answers ``D`` + data (read, download), ``V`` + a JSON event
(watch), and last ``R`` + a JSON result or ``X`` + a JSON error ``{errno, message, ...}``.
After an ``X`` in a session it discards frames up to the kernel's ``Z``.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import shutil
import stat
import struct
import tarfile
from collections import deque
from typing import Any

HEADER = struct.Struct("<IB")
#: Largest frame either side sends (a data chunk is at most a 64 KiB stream chunk).
MAX_FRAME = 1 << 20
#: Data chunk: fits one stream frame of the smallest payload limit a client may declare.
CHUNK = 64 * 1024 - 1
#: Entries one listing returns at most (the rest is ``truncated``).
MAX_ENTRIES = 10_000
#: Directories one recursive watch covers at most (each is one inotify watch).
MAX_WATCHES = 4096
#: Events a watch holds while the kernel does not take them; beyond: an ``overflow`` event.
WATCH_QUEUE = 1024

_RESOLVE_NO_XDEV, _RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
_RESOLVE_BENEATH, _RESOLVE_IN_ROOT = 0x08, 0x10
_SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
_RENAME_NOREPLACE = 1
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ISDIR = 0x4000, 0x8000, 0x40000000
_IN_ONLYDIR, _IN_DONT_FOLLOW, _IN_EXCL_UNLINK = 0x01000000, 0x02000000, 0x04000000
_WATCHED = (_IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
            | _IN_DELETE_SELF | _IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Failure(Exception):
    """A refusal with its own error code (not an errno)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


# -- frames ----------------------------------------------------------------------------

class Channel:
    """The socket to the kernel (blocking)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        data = HEADER.pack(len(payload), kind[0]) + payload
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def send_json(self, kind: bytes, value: Any) -> None:
        self.send(kind, json.dumps(value).encode())

    def receive(self) -> tuple[bytes, bytes] | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        length, kind = HEADER.unpack(header)
        if length > MAX_FRAME:
            raise SystemExit(2)
        payload = self._exactly(length) if length else b""
        if payload is None:
            return None
        return bytes([kind]), payload

    def _exactly(self, n: int) -> bytes | None:
        parts = bytearray()
        while len(parts) < n:
            data = os.read(self.fd, n - len(parts))
            if not data:
                return None
            parts += data
        return bytes(parts)


# -- resolving paths --------------------------------------------------------------------

def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = ctypes.create_string_buffer(struct.pack("QQQ", flags | os.O_CLOEXEC, mode, resolve), 24)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                       how, ctypes.c_size_t(24))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


class View:
    """Paths of the agent's view, resolved from its root."""

    def __init__(self) -> None:
        self.root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, path: str, flags: int, mode: int = 0) -> int:
        return openat2(self.root, path, flags, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS, mode)

    def parent(self, path: str) -> tuple[int, str]:
        """(an O_PATH fd of the directory holding ``path``, its last component)."""
        head, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise Failure("invalid_argument", f"{path!r} names no entry of a directory", field="path")
        return self.open(head or "/", os.O_PATH | os.O_DIRECTORY), name


def beneath(dirfd: int, relative: str, flags: int, mode: int = 0) -> int:
    """Open ``relative`` beneath ``dirfd``, through no symlink and no ``..`` out of it."""
    return openat2(dirfd, relative, flags, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS,
                   mode)


def safe_member(name: str) -> str:
    """A tar member's name as a path beneath the destination, or a Failure."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts or "\x00" in name:
        raise Failure("invalid_argument", f"tar member {name!r} leaves the destination directory",
                      field="data", member=name)
    return "/".join(parts)


def describe(st: os.stat_result, name: str, target: str | None = None) -> dict[str, Any]:
    mode = st.st_mode
    kind = ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
            else "symlink" if stat.S_ISLNK(mode) else "other")
    entry: dict[str, Any] = {"path": name, "type": kind, "size": st.st_size, "mode": stat.S_IMODE(mode),
                             "mtime": st.st_mtime, "uid": st.st_uid, "gid": st.st_gid}
    if target is not None:
        entry["target"] = target
    return entry


# -- the operations ------------------------------------------------------------------------

class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.view = View()

    def serve(self) -> None:
        while (frame := self.channel.receive()) is not None:
            kind, payload = frame
            if kind != b"Q":
                raise SystemExit(2)
            request = json.loads(payload)
            session = request["op"] in ("write", "upload")
            self.ended = not session
            try:
                result = getattr(self, "op_" + request["op"])(request)
            except (OSError, Failure, tarfile.TarError, UnicodeError) as exc:
                self.channel.send_json(b"X", _error(exc))
                self._drain()
            else:
                self.channel.send_json(b"R", result)

    def _drain(self) -> None:
        while not self.ended:
            frame = self.channel.receive()
            if frame is None:
                raise SystemExit(0)
            if frame[0] == b"Z":
                self.ended = True

    def chunks(self) -> Any:
        """A session's data, each chunk acknowledged as it is taken; ends at ``Z``."""
        while not self.ended:
            frame = self.channel.receive()
            if frame is None:
                raise SystemExit(0)
            kind, payload = frame
            if kind == b"Z":
                self.ended = True
                return
            self.channel.send(b"A")
            yield payload

    # read, write ---------------------------------------------------------------------------

    def op_read(self, request: dict[str, Any]) -> dict[str, Any]:
        limit, offset, length = request["limit"], request["offset"], request.get("length")
        fd = self.view.open(request["path"], os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), request["path"])
            wanted = length if length is not None else max(0, st.st_size - offset)
            if wanted > limit:
                raise Failure("too_large", f"{wanted} bytes to read, more than the limit of {limit} "
                              "(processes.files.max_bytes); read it in parts with offset and length",
                              limit=limit, size=st.st_size)
            # A file that says 0 bytes (/proc) is read to its end; growing ones up to the limit.
            remaining = length if length is not None else limit + 1
            sent = 0
            position = offset
            while remaining > 0:
                data = os.pread(fd, min(CHUNK, remaining), position)
                if not data:
                    break
                if length is None and sent + len(data) > limit:
                    raise Failure("too_large", f"more than the limit of {limit} bytes to read",
                                  limit=limit)
                self.channel.send(b"D", data)
                sent += len(data)
                position += len(data)
                remaining -= len(data)
            return {"path": request["path"], "size": st.st_size, "offset": offset, "read": sent,
                    "eof": position >= os.fstat(fd).st_size}
        finally:
            os.close(fd)

    def op_write(self, request: dict[str, Any]) -> dict[str, Any]:
        flags = os.O_WRONLY
        if request.get("create", True):
            flags |= os.O_CREAT
        if request.get("exclusive"):
            flags |= os.O_EXCL | os.O_CREAT
        if request.get("append"):
            flags |= os.O_APPEND
        elif request.get("offset") is None:
            flags |= os.O_TRUNC
        # openat2 refuses a mode without O_CREAT.
        fd = self.view.open(request["path"], flags, request.get("mode", 0o644) if flags & os.O_CREAT else 0)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), request["path"])
            if request.get("offset") is not None:
                os.lseek(fd, request["offset"], os.SEEK_SET)
            written = 0
            for chunk in self.chunks():
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
            return {"path": request["path"], "written": written, "size": os.fstat(fd).st_size}
        finally:
            os.close(fd)

    # entries --------------------------------------------------------------------------------

    def op_stat(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request["path"]
        if request.get("follow"):
            fd = self.view.open(path, os.O_PATH)
            try:
                return describe(os.fstat(fd), path)
            finally:
                os.close(fd)
        try:
            parent, name = self.view.parent(path)
        except Failure:  # "/", "dir/.": the directory itself
            fd = self.view.open(path, os.O_PATH)
            try:
                return describe(os.fstat(fd), path)
            finally:
                os.close(fd)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
            return describe(st, path, target)
        finally:
            os.close(parent)

    def op_list(self, request: dict[str, Any]) -> dict[str, Any]:
        top = self.view.open(request["path"], os.O_RDONLY | os.O_DIRECTORY)
        entries: list[dict[str, Any]] = []
        pending: deque[tuple[int, str, int]] = deque([(top, "", 1)])
        truncated = False
        try:
            while pending:
                fd, prefix, depth = pending.popleft()
                try:
                    with os.scandir(fd) as listing:
                        for item in sorted(listing, key=lambda e: e.name):
                            if len(entries) >= MAX_ENTRIES:
                                truncated = True
                                break
                            name = prefix + item.name
                            st = item.stat(follow_symlinks=False)
                            target = os.readlink(item.name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
                            entries.append(describe(st, name, target))
                            if depth < request["depth"] and stat.S_ISDIR(st.st_mode):
                                try:
                                    sub = beneath(fd, item.name, os.O_RDONLY | os.O_DIRECTORY)
                                except OSError:
                                    continue  # one the agent may not read is listed, not entered
                                pending.append((sub, name + "/", depth + 1))
                finally:
                    os.close(fd)
        finally:
            for fd, _, _ in pending:
                os.close(fd)
        return {"path": request["path"], "entries": entries, "truncated": truncated}

    def op_mkdir(self, request: dict[str, Any]) -> dict[str, Any]:
        path, mode = request["path"].rstrip("/") or "/", request.get("mode", 0o755)
        if not request.get("parents"):
            parent, name = self.view.parent(path)
            try:
                os.mkdir(name, mode, dir_fd=parent)
            finally:
                os.close(parent)
            return {"path": path, "created": True}
        created = False
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts)):
            prefix = "/" + "/".join(parts[:i + 1])
            parent, name = self.view.parent(prefix)
            try:
                os.mkdir(name, mode, dir_fd=parent)
                created = True
            except FileExistsError:
                fd = self.view.open(prefix, os.O_PATH | os.O_DIRECTORY)  # ENOTDIR if it is not one
                os.close(fd)
            finally:
                os.close(parent)
        return {"path": path, "created": created}

    def op_remove(self, request: dict[str, Any]) -> dict[str, Any]:
        parent, name = self.view.parent(request["path"])
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if request.get("recursive"):
                    shutil.rmtree(name, dir_fd=parent)  # fd-based: follows no symlink
                else:
                    os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)
        return {"path": request["path"], "removed": True}

    def op_rename(self, request: dict[str, Any]) -> dict[str, Any]:
        source, sname = self.view.parent(request["path"])
        try:
            try:
                target, tname = self.view.parent(request["to"])
            except Failure as exc:
                exc.details["field"] = "to"
                raise
            try:
                if request.get("overwrite", True):
                    os.rename(sname, tname, src_dir_fd=source, dst_dir_fd=target)
                elif _libc.renameat2(source, os.fsencode(sname), target, os.fsencode(tname),
                                     _RENAME_NOREPLACE) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), request["to"])
            finally:
                os.close(target)
        finally:
            os.close(source)
        return {"path": request["path"], "to": request["to"]}

    # tar ---------------------------------------------------------------------------------

    def op_download(self, request: dict[str, Any]) -> dict[str, Any]:
        top = self.view.open(request["path"], os.O_RDONLY | os.O_DIRECTORY)
        out = _TarOut(self.channel, request["limit"])
        entries = 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            pending: deque[tuple[int, str]] = deque([(top, "")])
            try:
                while pending:
                    fd, prefix = pending.popleft()
                    try:
                        with os.scandir(fd) as listing:
                            for item in sorted(listing, key=lambda e: e.name):
                                entries += 1
                                self._add(tar, fd, item.name, prefix + item.name, pending)
                    finally:
                        os.close(fd)
            finally:
                for fd, _ in pending:
                    os.close(fd)
        out.flush_all()
        return {"path": request["path"], "entries": entries, "bytes": out.total}

    @staticmethod
    def _add(tar: tarfile.TarFile, dirfd: int, name: str, member: str,
             pending: deque[tuple[int, str]]) -> None:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        info = tarfile.TarInfo(member)
        info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            pending.append((beneath(dirfd, name, os.O_RDONLY | os.O_DIRECTORY), member + "/"))
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dirfd)
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            fd = beneath(dirfd, name, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                info.size = os.fstat(fd).st_size
                tar.addfile(info, f)
        # Devices, fifos and sockets are not file contents: left out.

    def op_upload(self, request: dict[str, Any]) -> dict[str, Any]:
        top = self.view.open(request["path"], os.O_RDONLY | os.O_DIRECTORY)
        feed = _Feed(self.chunks())
        files = dirs = links = 0
        try:
            with tarfile.open(fileobj=feed, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    name = safe_member(member.name)
                    head, _, last = name.rpartition("/")
                    parent = self._directories(top, head) if head else os.dup(top)
                    try:
                        mode = member.mode & 0o777
                        if member.isdir():
                            try:
                                os.mkdir(last, mode or 0o755, dir_fd=parent)
                            except FileExistsError:
                                os.close(beneath(parent, last, os.O_PATH | os.O_DIRECTORY))
                            dirs += 1
                        elif member.isreg():
                            fd = beneath(parent, last, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode or 0o644)
                            with os.fdopen(fd, "wb") as out:
                                source = tar.extractfile(member)
                                assert source is not None
                                shutil.copyfileobj(source, out, CHUNK)
                            files += 1
                        elif member.issym():
                            os.symlink(member.linkname, last, dir_fd=parent)
                            links += 1
                        else:
                            kind = "a hard link" if member.islnk() else "a device, fifo or other special file"
                            raise Failure("invalid_argument", f"tar member {member.name!r} is {kind}: only "
                                          "files, directories and symlinks are unpacked", field="data",
                                          member=member.name)
                    finally:
                        os.close(parent)
            for _ in self.chunks():  # the end of the archive may leave padding unread
                pass
        finally:
            os.close(top)
        return {"path": request["path"], "files": files, "dirs": dirs, "symlinks": links,
                "bytes": feed.total}

    @staticmethod
    def _directories(top: int, relative: str) -> int:
        """An fd of ``relative`` beneath ``top``, making missing directories on the way."""
        fd = os.dup(top)
        for part in relative.split("/"):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            except BaseException:
                os.close(fd)
                raise
            try:
                nxt = beneath(fd, part, os.O_PATH | os.O_DIRECTORY)
            finally:
                os.close(fd)
            fd = nxt
        return fd

    # watch -------------------------------------------------------------------------------

    def op_watch(self, request: dict[str, Any]) -> dict[str, Any]:
        return _Watch(self, request["path"], bool(request.get("recursive")), request["queue"]).run()


class _TarOut:
    """A write-only file object for tarfile: the archive as data frames, bounded."""

    def __init__(self, channel: Channel, limit: int) -> None:
        self.channel, self.limit = channel, limit
        self.buffer = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self.total += len(data)
        if self.total > self.limit:
            raise Failure("too_large", f"the archive is more than the limit of {self.limit} bytes "
                          "(processes.files.max_bytes)", limit=self.limit)
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self.channel.send(b"D", bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]
        return len(data)

    def flush_all(self) -> None:
        if self.buffer:
            self.channel.send(b"D", bytes(self.buffer))
            self.buffer.clear()


class _Feed:
    """A read-only file object for tarfile over a session's chunks."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks
        self.buffer = bytearray()
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.total += len(chunk)
            self.buffer += chunk
        size = len(self.buffer) if n < 0 else min(n, len(self.buffer))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class _Watch:
    """inotify events under one directory, as ``V`` frames, until it goes or the kernel ends it."""

    def __init__(self, worker: Worker, path: str, recursive: bool, queue: int) -> None:
        self.worker, self.path, self.recursive = worker, path, recursive
        self.queue: deque[dict[str, Any]] = deque()
        self.limit = queue
        self.dropped = 0
        self.dirs: dict[int, str] = {}  # watch descriptor -> its path relative to the top ("" for it)
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "inotify_init1")
        self.pending_out = b""
        self.top = -1

    def run(self) -> dict[str, Any]:
        try:
            self.top = self.worker.view.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._add(self.top, "")
            if self.recursive:
                self._add_tree(self.top, "")
            self.worker.channel.send_json(b"V", {"event": "ready", "path": ""})
            os.set_blocking(self.worker.channel.fd, False)
            while self.dirs:
                self._serve_once()
            while self.queue or self.pending_out or self.dropped:
                self._flush()
                if self.queue or self.pending_out:
                    select.select([], [self.worker.channel.fd], [])
            os.set_blocking(self.worker.channel.fd, True)
            return {"path": self.path, "ended": "the watched directory is gone"}
        finally:
            os.close(self.fd)
            if self.top >= 0:
                os.close(self.top)

    def _add(self, fd: int, relative: str) -> None:
        if len(self.dirs) >= MAX_WATCHES:
            self._event({"event": "overflow", "path": relative,
                         "reason": f"more than {MAX_WATCHES} directories: not watched"})
            return
        # Through /proc/self/fd: the directory this fd holds, never a path that may have moved.
        wd = _libc.inotify_add_watch(self.fd, f"/proc/self/fd/{fd}".encode(),
                                     _WATCHED | _IN_ONLYDIR | _IN_EXCL_UNLINK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), relative or self.path)
        self.dirs[wd] = relative

    def _add_tree(self, fd: int, relative: str) -> None:
        with os.scandir(fd) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    try:
                        sub = beneath(fd, item.name, os.O_RDONLY | os.O_DIRECTORY)
                    except OSError:
                        continue
                    try:
                        name = f"{relative}/{item.name}" if relative else item.name
                        self._add(sub, name)
                        self._add_tree(sub, name)
                    finally:
                        os.close(sub)

    def _serve_once(self) -> None:
        channel = self.worker.channel.fd
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(channel, select.POLLIN | (select.POLLOUT if self.pending_out or self.queue else 0))
        for fd, events in poller.poll():
            if fd == channel:
                if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    if events & (select.POLLHUP | select.POLLERR) or not os.read(channel, 4096):
                        raise SystemExit(0)  # the kernel ended the watch
                if events & select.POLLOUT:
                    self._flush()
            elif fd == self.fd:
                self._read_events()

    def _flush(self) -> None:
        channel = self.worker.channel.fd
        while True:
            if not self.pending_out:
                if self.dropped:
                    event = {"event": "overflow", "dropped": self.dropped}
                    self.dropped = 0
                elif self.queue:
                    event = self.queue.popleft()
                else:
                    return
                payload = json.dumps(event).encode()
                self.pending_out = HEADER.pack(len(payload), ord("V")) + payload
            try:
                n = os.write(channel, self.pending_out)
            except BlockingIOError:
                return
            self.pending_out = self.pending_out[n:]

    def _event(self, event: dict[str, Any]) -> None:
        if len(self.queue) >= self.limit:
            self.dropped += 1
        else:
            self.queue.append(event)

    def _read_events(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        moves: dict[int, str] = {}
        offset = 0
        while offset < len(data):
            wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = raw.split(b"\0", 1)[0].decode(errors="surrogateescape")
            if mask & _IN_Q_OVERFLOW:
                self.dropped += 1
                continue
            if wd not in self.dirs:
                continue
            if mask & _IN_IGNORED:
                self.dirs.pop(wd, None)
                continue
            if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF):
                if self.dirs[wd] == "":
                    self._event({"event": "deleted" if mask & _IN_DELETE_SELF else "moved", "path": ""})
                    self.dirs.clear()
                    return
                continue
            base = self.dirs[wd]
            path = f"{base}/{name}" if base else name
            is_dir = bool(mask & _IN_ISDIR)
            if mask & _IN_MOVED_FROM:
                moves[cookie] = path
                self._event({"event": "moved", "path": path, "to": None, "dir": is_dir, "cookie": cookie})
                continue
            if mask & _IN_MOVED_TO and cookie in moves:
                for event in reversed(self.queue):
                    if event.get("cookie") == cookie:
                        event["to"] = path
                        del event["cookie"]
                        break
                if is_dir and self.recursive:
                    self._watch_new(path)
                continue
            kind = ("created" if mask & (_IN_CREATE | _IN_MOVED_TO) else "deleted" if mask & _IN_DELETE
                    else "modified")
            self._event({"event": kind, "path": path, "dir": is_dir})
            if kind == "created" and is_dir and self.recursive:
                self._watch_new(path)
        for event in self.queue:  # moved out of the watched tree: gone, as far as it can tell
            if event.pop("cookie", None) is not None and event["to"] is None:
                event["event"] = "deleted"
                del event["to"]

    def _watch_new(self, relative: str) -> None:
        try:
            fd = beneath(self.top, relative, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            self._add(fd, relative)
            self._add_tree(fd, relative)
        finally:
            os.close(fd)


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, Failure):
        return {"code": exc.code, "message": str(exc), **exc.details}
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str) else None
        return {"errno": exc.errno or 0, "name": errno.errorcode.get(exc.errno or 0, "?"),
                "message": exc.strerror or str(exc), "path": where}
    return {"code": "invalid_argument", "message": f"not a valid tar archive: {exc}", "field": "data"}


def main() -> None:
    os.umask(0o022)
    Worker(Channel(0)).serve()


if __name__ == "__main__":
    main()
