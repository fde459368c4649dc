"""Capture an agent's stdout and stderr into a size-capped log file, read and followed by LOGS.

The agent writes both streams into one pipe (ordered as a terminal would show
them); the kernel reads it from the event loop and appends to
``<state_dir>/logs/<name>-<id>.log``. When the file reaches the cap it becomes
``.log.1`` (replacing the previous one), so an agent never holds more than two
caps of disk. Offsets count every byte the agent ever wrote.
"""
from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from io import FileIO

from ..state.private import private_opener

_READ_SIZE = 64 * 1024


class LogCapture:
    """The read end of an agent's output pipe and the file it lands in."""

    _file: FileIO

    def __init__(self, path: Path, max_bytes: int, *, append: bool = True) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.max_bytes = max_bytes
        #: Bytes written by the agent so far, and the offset where the current file starts.
        self.size = 0
        self.file_start = 0
        #: Offset where ``rotated`` starts (it ends at ``file_start``), if it exists.
        self.rotated_start: int | None = None
        self.closed = not append
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._eof = asyncio.Event()
        if append:
            # Opened for the agent's life; 0600: an agent's output is nobody else's to read.
            self._file = open(path, "ab", buffering=0, opener=private_opener)  # noqa: SIM115
        else:
            # An earlier kernel's agent's log (``ledger``): read as it was left, never written.
            rotated = _size(self.rotated)
            if rotated is not None:
                self.rotated_start, self.file_start = 0, rotated
            self.size = self.file_start + (_size(path) or 0)
            self._eof.set()

    def pipe(self) -> int:
        """Make the pipe, start reading it; returns the write end for the agent (caller closes it)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read_fd, self._on_readable)
        return write_fd

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._stop_reading()
            return
        self._append(data)

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - (self.size - self.file_start)
            if room <= 0:
                self._rotate()
                continue
            piece = view[:room]
            self._file.write(piece)
            self.size += len(piece)
            view = view[len(piece):]
        self._changed.set()
        self._changed = asyncio.Event()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.rotated)
        self.rotated_start = self.file_start
        self.file_start = self.size
        self._file = open(self.path, "ab", buffering=0, opener=private_opener)  # noqa: SIM115

    def _stop_reading(self) -> None:
        if self._fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._eof.set()
        self._changed.set()

    async def wait_eof(self, timeout: float) -> bool:
        """Wait until every writer (the agent's whole tree) closed the pipe; False on timeout."""
        try:
            await asyncio.wait_for(self._eof.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        """Stop capturing (the agent is reaped); the file stays for LOGS."""
        self._stop_reading()
        if not self.closed:
            self._file.close()
            self.closed = True

    async def wait_beyond(self, offset: int) -> None:
        """Return once there are bytes past ``offset`` or capture has stopped."""
        while self.size <= offset and not self._eof.is_set():
            await self._changed.wait()

    @property
    def finished(self) -> bool:
        return self._eof.is_set()

    @property
    def oldest(self) -> int:
        """The smallest offset still on disk."""
        return self.file_start if self.rotated_start is None else self.rotated_start

    def read(self, offset: int, limit: int) -> tuple[int, bytes]:
        """Up to ``limit`` bytes from ``offset`` (moved up to ``oldest`` if rotated away)."""
        offset = max(offset, self.oldest)
        out = bytearray()
        if offset < self.file_start and self.rotated_start is not None:
            out += _read_at(self.rotated, offset - self.rotated_start, min(limit, self.file_start - offset))
        if len(out) < limit and offset + len(out) >= self.file_start:
            out += _read_at(self.path, offset + len(out) - self.file_start, limit - len(out))
        return offset, bytes(out)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _read_at(path: Path, position: int, length: int) -> bytes:
    if length <= 0:
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, length, position)
    finally:
        os.close(fd)
