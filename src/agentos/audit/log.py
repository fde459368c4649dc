"""The append-only JSON-lines audit log, rotated, compressed and indexed.

Records are buffered and written once per event-loop iteration with one ``write`` on an
``O_APPEND`` descriptor, so a burst of syscalls costs one system call and concurrent
readers never see a torn line. Followers (AUDIT with ``follow``) get each record as it is
logged. Each record is indexed as it is buffered (``index``): by block, time and caller.

Files, all 0600 in the state dir: ``audit.log`` is written; once it reaches
``audit.max_size`` bytes (or its oldest record ``audit.rotate_every`` seconds), it is renamed
``audit.log.<seq>`` on the loop (one rename, one open) and a worker thread gzips it to
``audit.log.<seq>.gz`` with an index beside it (``<file>.idx``), then deletes the plain
file. ``seq`` only grows: no file is ever renamed twice. The worker writes both new files
under ``.tmp`` names, fsyncs them, renames the index into place, then the data file, then
deletes the plain one, so a crash at any point leaves either the plain file (done again at
the next start) or a complete pair: no record is lost or read twice. Retention deletes
the oldest rotated files past ``audit.keep`` or ``audit.max_age``, data file first.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import ujson

from ..parking import ParkingExecutor
from ..state.private import open_private, private_dir
from .index import BLOCK, Index, compress, decompress, identities, read_block, scan, write_private
from .settings import AuditSettings

log = logging.getLogger("agentos.audit")
_APPEND = os.O_WRONLY | os.O_APPEND
#: Rotated files whose index a reader keeps loaded at once (the current file's is always).
_LOADED = 4
Record = dict[str, Any]
Follower = Callable[[Record], None]


class Position(NamedTuple):
    """A point in the log: byte ``offset`` of file ``seq`` (stable across that file's rotation)."""

    seq: int
    offset: int


@dataclass
class Work:
    """What queries have cost, summed: the measure that must not grow with the log."""

    blocks: int = 0
    bytes: int = 0
    records: int = 0


class Segment:
    """One file of the log: the current one, or a rotated one (plain until compressed)."""

    def __init__(self, seq: int, path: Path, index: Index | None) -> None:
        self.seq = seq
        self.path = path
        #: None while not loaded (a rotated file's is read from its ``.idx`` when a query needs it).
        self.index = index
        #: Its index is on disk too (so the one in memory may be dropped).
        self.saved = index is None
        #: Its time span while ``index`` is not loaded: a query outside it skips the file unread.
        self.span: Index | None = None
        self.deleted = False

    @property
    def compressed(self) -> bool:
        return self.path.suffix == ".gz"


class AuditLog:
    """Appends records to ``path`` (rotating it as ``settings`` say); reads across every file."""

    def __init__(self, path: Path | str, settings: AuditSettings | None = None, *,
                 block_size: int = BLOCK) -> None:
        self.path = Path(path)
        self.settings = settings or AuditSettings()
        self.block_size = block_size
        self.work = Work()
        self._fd: int | None = None
        self._size = 0
        #: Where the next buffered record starts in the current file.
        self._next = 0
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        #: The loop that writes what is buffered (the service's); None: the running one, if any.
        #: Set, it is not looked up per record (on Python 3.11 that costs a getpid()).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._followers: list[Follower] = []
        #: Oldest first; the last is the current file. Changed under ``_lock`` (readers are threads).
        self._segments: list[Segment] = []
        self._lock = threading.Lock()
        self._loaded: list[Segment] = []
        #: Compression and retention: one thread, so they never race each other.
        self._worker: ParkingExecutor | None = None

    # -- opening and closing ---------------------------------------------------------

    def open(self) -> None:
        """Recover what a crash left, index the current file, start the worker. Blocking: a
        kernel calls it in a thread (it reads the current file once)."""
        private_dir(self.path.parent)
        segments, unfinished = self._recover()
        fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A line torn by a crash mid-write ends here: the next record must not join it.
            os.write(fd, b"\n")
            size += 1
        index, _ = scan(self.path, self.block_size)
        seq = max((s.seq for s in segments), default=0) + 1
        self._segments = [*segments, Segment(seq, self.path, index)]
        self._fd, self._size, self._next = fd, size, size
        self._worker = ParkingExecutor(1, thread_name_prefix="agentos-audit-rotate")
        for segment in unfinished:
            self._submit(self._finish, segment)
        self._submit(self._retain)

    def close(self) -> None:
        if self._fd is None:
            return
        self.flush()
        os.close(self._fd)
        self._fd = None
        if self._worker is not None:
            # A compression under way finishes; one not begun is done by the next start.
            self._worker.shutdown(cancel_futures=True)
            self._worker = None

    # -- writing -----------------------------------------------------------------------

    def record(self, entry: Record) -> None:
        """Log ``entry``; it reaches the file by the end of this loop iteration."""
        line = _line(entry)
        if self._fd is None:
            # A syscall finishing while the kernel shuts down, after close(): still logged
            # (the next start indexes it with the rest of the file).
            fd = open_private(self.path, _APPEND)
            try:
                _write_all(fd, line)
            finally:
                os.close(fd)
            return
        ts = entry.get("ts")
        self._segments[-1].index.add(  # type: ignore[union-attr]  # the current file's is always loaded
            self._next, len(line), float(ts) if isinstance(ts, (int, float)) else 0.0, identities(entry))
        self._next += len(line)
        self._buffer.append(line)
        for follower in list(self._followers):
            follower(entry)
        if self._flush_scheduled:
            return
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
        self._flush_scheduled = True
        loop.call_soon(self._write_buffered)

    def flush(self) -> Position:
        """Write everything buffered; returns the end of the log afterwards."""
        self._write_buffered()
        return Position(self._segments[-1].seq if self._segments else 0, self._size)

    def _write_buffered(self) -> None:
        # The loop's flush: one write, and a rotation once the file is full.
        self._flush_scheduled = False
        if self._buffer and self._fd is not None:
            data = b"".join(self._buffer)
            self._buffer.clear()
            _write_all(self._fd, data)
            self._size += len(data)
            if self._size >= self.settings.max_size:
                self.rotate()

    def rotate(self) -> None:
        """Start a new file now (if the current one holds anything); the worker compresses the old."""
        self._write_buffered()
        current = self._segments[-1] if self._segments else None
        if self._fd is None or self._worker is None or current is None or not self._size:
            return
        rotated = self.path.with_name(f"{self.path.name}.{current.seq}")
        with self._lock:
            os.rename(self.path, rotated)
            current.path = rotated
            fd = open_private(self.path, _APPEND)
            os.close(self._fd)
            self._fd, self._size, self._next = fd, 0, 0
            self._segments.append(Segment(current.seq + 1, self.path, Index(block_size=self.block_size)))
        self._submit(self._finish, current)
        self._submit(self._retain)

    def maintain(self, now: float | None = None) -> None:
        """Rotate the current file if it is old enough, and apply retention (the loop calls it
        now and then: an idle log still rotates and ages out)."""
        now = time.time() if now is None else now
        every = self.settings.rotate_every
        current = self._segments[-1] if self._segments else None
        oldest = current.index.lo if current is not None and current.index is not None else None
        if every is not None and oldest is not None and now - oldest >= every:
            self.rotate()
        if self._worker is not None:
            self._submit(self._retain, now)

    def settle(self) -> None:
        """Wait until the worker has done what it was given."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._worker is not None
        self._worker.submit(fn, *args).add_done_callback(_report)

    def follow(self, follower: Follower) -> tuple[Position, Callable[[], None]]:
        """Flush, then send every later record to ``follower``.

        Returns the end of the log at that instant (read up to it for the backlog, the
        follower has the rest, with no gap and no duplicate) and the function that stops following.
        """
        end = self.flush()
        self._followers.append(follower)

        def stop() -> None:
            if follower in self._followers:
                self._followers.remove(follower)

        return end, stop

    # -- reading (blocking: a worker thread of the caller's) ----------------------------

    def read(self, agent: str | None = None, limit: int | None = None, since: float | None = None,
             until: float | None = None, end: Position | None = None) -> list[Record]:
        """The last ``limit`` records up to ``end`` (by ``agent``: an id, a name or ``uid:<n>``;
        with ``since <= ts < until``), oldest first, from every file the log still has."""
        found: list[Record] = []
        with self._lock:
            segments = [s for s in self._segments if end is None or s.seq <= end.seq]
        needle = _needle(agent)
        for segment in reversed(segments):
            if limit is not None and len(found) >= limit:
                break
            known = segment.index if segment.index is not None else segment.span
            if known is not None and not known.overlaps(since, until):
                continue
            opened = self._open(segment)
            if opened is None:
                continue
            f, index, compressed = opened
            bound = end.offset if end is not None and segment.seq == end.seq else None
            with f:
                for block in index.candidates(agent, since, until, bound):
                    data = read_block(f, block, compressed, bound)
                    self.work.blocks += 1
                    self.work.bytes += block.length
                    for line in _newest_first(data, needle):
                        self.work.records += 1
                        record = _record(line)
                        if record is None or not _wanted(record, agent, since, until):
                            continue
                        found.append(record)
                        if limit is not None and len(found) >= limit:
                            break
                    if limit is not None and len(found) >= limit:
                        break
        found.reverse()
        return found

    def files(self) -> list[Path]:
        """Every file of the log, oldest first (the current one last)."""
        with self._lock:
            return [segment.path for segment in self._segments]

    def _open(self, segment: Segment) -> tuple[Any, Index, bool] | None:
        """``segment``'s file, opened, with the index that describes it and whether it is
        compressed (None once deleted): all three of one instant, since the worker may compress
        the segment right after (the file opened stays readable, and is what must be read)."""
        while True:
            with self._lock:
                if segment.deleted:
                    return None
                index, path = segment.index, segment.path
                if index is not None:
                    return open(path, "rb"), index, path.suffix == ".gz"  # noqa: SIM115 - the caller closes it
            # Loaded outside the lock (the loop's rotation takes it); checked again inside.
            try:
                loaded: Index | None = Index.load(Path(f"{path}.idx").read_bytes())
            except FileNotFoundError:
                loaded = None
            with self._lock:
                if segment.path != path or segment.deleted:
                    continue  # compressed or deleted meanwhile: look again
                if loaded is None:
                    return None  # its index was removed by hand: the file cannot be read by position
                if segment.index is None:
                    segment.index = loaded
                    self._keep_loaded(segment)

    def _keep_loaded(self, segment: Segment) -> None:
        # Under the lock: a rotated file's index is dropped again once others were needed since.
        self._loaded.append(segment)
        if len(self._loaded) > _LOADED:
            oldest = self._loaded.pop(0)
            if oldest.saved and oldest.index is not None and oldest not in self._loaded:
                oldest.span = Index(lo=oldest.index.lo, hi=oldest.index.hi)
                oldest.index = None

    # -- the worker: compression and retention ---------------------------------------------

    def _finish(self, segment: Segment) -> None:
        """Compress a rotated plain file (or, uncompressed, write its index); delete the plain."""
        assert segment.index is not None
        if segment.deleted:
            return
        plain = segment.path
        if not self.settings.compress:
            _publish(Path(f"{plain}.idx"), segment.index.dump())
            _sync_dir(plain.parent)
            with self._lock:
                segment.saved = True
                self._keep_loaded(segment)
            return
        gz = plain.with_name(plain.name + ".gz")
        index = compress(plain, segment.index, Path(f"{gz}.tmp"))
        write_private(Path(f"{gz}.idx.tmp"), index.dump())
        # The index first: a data file in place always has its index beside it.
        os.rename(f"{gz}.idx.tmp", f"{gz}.idx")
        os.rename(f"{gz}.tmp", gz)
        _sync_dir(plain.parent)
        with self._lock:
            segment.path, segment.index, segment.saved = gz, index, True
            self._keep_loaded(segment)
            _unlink(plain)
            _unlink(Path(f"{plain}.idx"))

    def _retain(self, now: float | None = None) -> None:
        """Delete the rotated files past ``keep``, and those untouched for ``max_age``."""
        now = time.time() if now is None else now
        with self._lock:
            rotated = self._segments[:-1]
        doomed = rotated[:max(0, len(rotated) - self.settings.keep)]
        if self.settings.max_age is not None:
            for segment in rotated[len(doomed):]:
                try:
                    if now - segment.path.stat().st_mtime > self.settings.max_age:
                        doomed.append(segment)
                except FileNotFoundError:
                    pass
        for segment in doomed:
            with self._lock:
                segment.deleted = True
                self._segments.remove(segment)
                if segment in self._loaded:
                    self._loaded = [s for s in self._loaded if s is not segment]
            # The data file first: an index left alone by a crash is deleted at the next start.
            _unlink(segment.path)
            _unlink(Path(f"{segment.path}.idx"))

    # -- recovery at start ----------------------------------------------------------------

    def _recover(self) -> tuple[list[Segment], list[Segment]]:
        """The rotated files, oldest first, and those whose compression a crash interrupted."""
        pattern = re.compile(rf"{re.escape(self.path.name)}\.(\d+)(\.gz)?(\.idx)?(\.tmp)?\Z")
        seqs: dict[int, set[str]] = {}
        for name in os.listdir(self.path.parent):
            match = pattern.match(name)
            if match is None:
                continue
            if match.group(4):
                _unlink(self.path.parent / name)  # half written by a worker a crash stopped
                continue
            seqs.setdefault(int(match.group(1)), set()).add(name[len(self.path.name) + 1 + len(match.group(1)):])
        segments, unfinished = [], []
        for seq in sorted(seqs):
            have = seqs[seq]
            plain = self.path.with_name(f"{self.path.name}.{seq}")
            gz = plain.with_name(plain.name + ".gz")
            if {".gz", ".gz.idx"} <= have:
                for stale in ("", ".idx"):
                    _unlink(Path(f"{plain}{stale}"))  # compressed and in place: the plain was not yet deleted
                segments.append(_rotated(seq, gz))
                continue
            _unlink(Path(f"{gz}.idx"))  # an index whose data file never arrived
            if "" not in have and ".gz" in have:
                decompress(gz, plain)  # a gzip without its index (put here by hand): indexed again
                _unlink(gz)
                have.add("")
            if "" not in have:
                _unlink(Path(f"{plain}.idx"))
                continue
            if ".idx" in have and not self.settings.compress:
                segments.append(_rotated(seq, plain))
                continue
            _unlink(gz)
            segment = Segment(seq, plain, scan(plain, self.block_size)[0])
            segment.saved = False
            segments.append(segment)
            unfinished.append(segment)
        return segments, unfinished


def _report(future: Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("audit log rotation: %s", future.exception(), exc_info=future.exception())


def _rotated(seq: int, path: Path) -> Segment:
    """A rotated file found complete at start: its span read now, its index when a query needs it."""
    segment = Segment(seq, path, None)
    segment.span = Index.span(Path(f"{path}.idx"))
    return segment


def _publish(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file, fsynced, renamed."""
    write_private(Path(f"{path}.tmp"), data)
    os.rename(f"{path}.tmp", path)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a regular file takes it all unless the disk is full
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def matches(record: Record, agent: str | None) -> bool:
    """True if ``record`` is by ``agent`` (an agent id, an agent name, or ``uid:<n>``)."""
    return agent is None or agent in identities(record)


def _wanted(record: Record, agent: str | None, since: float | None, until: float | None) -> bool:
    if not matches(record, agent):
        return False
    ts = record.get("ts")
    if since is None and until is None:
        return True
    if not isinstance(ts, (int, float)):
        return False
    return (since is None or ts >= since) and (until is None or ts < until)


def _newest_first(data: bytes, needle: bytes | None) -> Iterator[bytes]:
    """The lines of ``data`` holding ``needle`` (all without one), last first. A sought agent's
    records are found by a search in C, not by splitting the block: in a block of many callers'
    records, only theirs are touched."""
    if needle is None:
        yield from (line for line in reversed(data.split(b"\n")) if line)
        return
    end = len(data)
    while (hit := data.rfind(needle, 0, end)) >= 0:
        start = data.rfind(b"\n", 0, hit) + 1
        stop = data.find(b"\n", hit)
        yield data[start:stop if stop >= 0 else len(data)]
        end = start


def _needle(agent: str | None) -> bytes | None:
    """Bytes every line of a record by ``agent`` holds, as the log writes it (see ``matches``)."""
    if agent is None:
        return None
    if agent.startswith("uid:"):
        return f'"uid":{agent[4:]}'.encode()
    return _line(agent)[:-1]


def _line(value: Any) -> bytes:
    """``value`` as the log writes it, newline-terminated: UTF-8 JSON by msgspec (half of
    ujson's instructions), ``/`` escaped as ``\\/`` so that every string is written byte for
    byte as ujson wrote it before, and a search for a name finds it in files of either age."""
    return _encoder.encode(value).replace(b"/", b"\\/") + b"\n"


_encoder = msgspec.json.Encoder()


def _record(line: bytes) -> Record | None:
    try:
        record = ujson.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
