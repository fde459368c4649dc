"""The append-only JSON-lines audit log.

Records are buffered and written once per event-loop iteration with one
``write`` on an ``O_APPEND`` descriptor, so a burst of syscalls costs one
system call and concurrent readers never see a torn line. Followers (AUDIT
with ``follow``) get each record as it is logged.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ujson

from ..state.private import open_private, private_dir

_APPEND = os.O_WRONLY | os.O_APPEND
#: How much of the log a reader takes at a time, walking back from its end.
_BLOCK = 64 * 1024
Record = dict[str, Any]
Follower = Callable[[Record], None]


class AuditLog:
    """Appends records to ``path``; never truncates or rewrites it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._followers: list[Follower] = []

    def open(self) -> None:
        private_dir(self.path.parent)
        self._fd = open_private(self.path, _APPEND)

    def close(self) -> None:
        if self._fd is None:
            return
        self.flush()
        os.close(self._fd)
        self._fd = None

    def record(self, entry: Record) -> None:
        """Log ``entry``; it reaches the file by the end of this loop iteration."""
        line = ujson.dumps(entry, ensure_ascii=False).encode() + b"\n"
        if self._fd is None:
            # A syscall finishing while the kernel shuts down, after close(): still logged.
            fd = open_private(self.path, _APPEND)
            try:
                _write_all(fd, line)
            finally:
                os.close(fd)
            return
        self._buffer.append(line)
        for follower in list(self._followers):
            follower(entry)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._write_buffered)

    def flush(self) -> int:
        """Write everything buffered; returns the file's size afterwards."""
        if self._fd is None:
            # Closed: close() flushed, and records since were written directly.
            self._flush_scheduled = False
            return self.path.stat().st_size if self.path.exists() else 0
        self._write_buffered()
        return os.fstat(self._fd).st_size

    def _write_buffered(self) -> None:
        # The loop's flush: one write, no fstat (only follow() needs the size).
        self._flush_scheduled = False
        if self._buffer and self._fd is not None:
            data = b"".join(self._buffer)
            self._buffer.clear()
            _write_all(self._fd, data)

    def follow(self, follower: Follower) -> tuple[int, Callable[[], None]]:
        """Flush, then send every later record to ``follower``.

        Returns the file size at that instant (read up to it for the backlog,
        the follower has the rest, with no gap and no duplicate) and the
        function that stops following.
        """
        size = self.flush()
        self._followers.append(follower)

        def stop() -> None:
            if follower in self._followers:
                self._followers.remove(follower)

        return size, stop


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def matches(record: Record, agent: str | None) -> bool:
    """True if ``record`` is by ``agent`` (an agent id, an agent name, or ``uid:<n>``)."""
    if agent is None:
        return True
    return agent in (record.get("agent"), record.get("name"), f"uid:{record.get('uid')}")


def read_records(path: Path | str, agent: str | None = None, limit: int | None = None,
                 end: int | None = None) -> list[Record]:
    """Records of ``path`` (up to byte ``end``) by ``agent``, the last ``limit`` of them.

    Read backwards from ``end`` a block at a time, so asking for the last hundred
    records of a large log costs the blocks holding them, not the whole file.
    Blocking file I/O: call it in a worker thread from the event loop.
    """
    found: list[Record] = []
    needle = _needle(agent)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        size = os.fstat(f.fileno()).st_size
        position = size if end is None else min(end, size)
        carry = b""  # the part of a line that starts in the block before
        newest = True
        while position > 0 and (limit is None or len(found) < limit):
            step = min(_BLOCK, position)
            position -= step
            f.seek(position)
            lines = (f.read(step) + carry).split(b"\n")
            if newest:
                # After the last newline: nothing, or a line torn by a crash mid-write.
                if len(lines) == 1:
                    carry = b""
                    continue
                lines.pop()
                newest = False
            # The first piece may be the end of a line from further back, unless this is the start.
            carry = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                if needle is not None and needle not in line:
                    continue  # cheaper than parsing every record of a large log
                record = _record(line, agent)
                if record is not None:
                    found.append(record)
                    if limit is not None and len(found) >= limit:
                        break
    found.reverse()
    return found


def _needle(agent: str | None) -> bytes | None:
    """Bytes every line of a record by ``agent`` holds, as the log writes it (see ``matches``)."""
    if agent is None:
        return None
    if agent.startswith("uid:"):
        return f'"uid":{agent[4:]}'.encode()
    return ujson.dumps(agent, ensure_ascii=False).encode()


def _record(line: bytes, agent: str | None) -> Record | None:
    if not line:
        return None
    try:
        record = ujson.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and matches(record, agent) else None
