"""Capture an agent's stdout and stderr into a size-capped log file, read and followed by LOGS;
keep ended agents' logs only as long as ``processes.logs`` says.

The agent writes both streams into one pipe (ordered as a terminal would show
them); the kernel reads it from the event loop and appends to
``<state_dir>/logs/<name>-<id>.log`` (``logs/<project>/...`` for an agent of a project).
When the file reaches the cap (``processes.log_max_bytes``) it becomes ``.log.1``
(replacing the previous one), so an agent never holds more than two caps of disk.
Offsets count every byte the agent ever wrote.

An agent that is not writing costs the kernel no descriptor: the pipe's read end is parked in
the descriptor holder (``holder``), which says when output arrives; the kernel then reads a copy
of it, with the log file open, until the agent has been quiet for ``REST_AFTER`` seconds (or
``MAX_READING`` other agents wrote since), and parks it again. The pipe itself never closes
before the capture does, so an agent's writes fail no more and block no sooner than before.

Once an agent has ended, its log is kept while its project has fewer than ``keep``
newer ended agents' logs and for ``max_age`` (``LogRetention``): each end queues its log
(oldest first, per project), a queue past ``keep`` deletes its oldest, and a sweep now and
then deletes those past ``max_age``, so neither costs more than what it deletes. A kernel
reads the directory once as it starts (in a thread), which also applies the settings
to what earlier kernels left.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import select
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import FileIO
from pathlib import Path
from typing import Any

from ..protocol.requests import PROJECT_PATTERN
from ..state.private import private_dir, private_opener
from ..units import parse_duration
from .holder import FdHolder, Parked

log = logging.getLogger("agentos.processes")

_READ_SIZE = 64 * 1024
#: Seconds of quiet after which an agent's pipe goes back to the holder (and its log file closes).
REST_AFTER = 2.0
#: Agents whose output the kernel reads at once (two descriptors each), at most.
MAX_READING = 256
#: Seconds between sweeps for logs past their ``max_age``.
SWEEP_EVERY = 60.0
_PROJECT = re.compile(PROJECT_PATTERN)


class LogCapture:
    """The read end of an agent's output pipe and the file it lands in."""

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
        #: The log file while output is being read (closed while the pipe is parked).
        self._file: FileIO | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Capture stopped (every writer closed the pipe, or the agent was reaped).
        self._at_eof = False
        # Made only for a waiter (LOGS follow, the reap's wait): two Events, each with its deque,
        # were ~1.7 KB of the kernel's memory per idle agent.
        self._changed: asyncio.Event | None = None
        self._eof: asyncio.Event | None = None
        #: The pipe's read end in the holder (None: the kernel keeps it), and who reads the pipes.
        self._holder: FdHolder | None = None
        self._parked: Parked | None = None
        self._readers: OutputReaders | None = None
        if append:
            # Made now, even if the agent never writes; 0600: its output is nobody else's to read.
            self._open_file().close()
        else:
            # An earlier kernel's agent's log (``ledger``): read as it was left, never written.
            rotated = _size(self.rotated)
            if rotated is not None:
                self.rotated_start, self.file_start = 0, rotated
            self.size = self.file_start + (_size(path) or 0)
            self._at_eof = True

    def pipe(self) -> int:
        """Make the pipe, start reading it; returns the write end for the agent (caller closes it)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read_fd, self._on_readable)
        return write_fd

    def park(self, holder: FdHolder, readers: OutputReaders) -> None:
        """Hand the pipe's read end to ``holder`` until output arrives (kept here without one)."""
        if self._fd < 0 or self._parked is not None or not holder.available:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        parked = holder.hold(self._fd, select.EPOLLIN, self._on_output, self._not_parked, give_back=True)
        if parked is None:  # the holder is full: the kernel keeps reading it
            self._loop.add_reader(self._fd, self._on_readable)
            return
        self._fd = -1  # hold() took it
        self._holder, self._parked, self._readers = holder, parked, readers
        self._close_file()

    def rest(self) -> None:
        """Quiet for a while: the pipe goes back to the holder, which says when output arrives."""
        if self._parked is None or self._fd < 0:
            return
        assert self._holder is not None and self._loop is not None
        self._holder.arm(self._parked)  # output already waiting wakes it at once
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._close_file()

    def _on_output(self, copy: int, _events: int) -> None:
        """The holder saw output (or every writer gone): read it from ``copy`` until quiet.

        The first read is made at once: at an agent's end it finds the end of file, and the
        capture is done without adding the pipe to the loop's epoll only to take it out the
        next round (a shutdown ends thousands of agents)."""
        assert self._loop is not None and self._readers is not None
        self._fd = copy
        self._readers.reading(self)
        self._on_readable()
        if self._fd == copy:  # more may come: read on as it does
            self._loop.add_reader(copy, self._on_readable)

    def _not_parked(self, read_fd: int, err: int) -> None:
        """The holder could not keep the pipe (``read_fd``: given back) or ended: the capture
        reads its own copy for good, as without a holder, if it has one."""
        assert self._loop is not None and self._readers is not None
        self._readers.forget(self)
        self._holder, self._parked, self._readers = None, None, None
        if read_fd >= 0:
            self._fd = read_fd
            self._loop.add_reader(read_fd, self._on_readable)
        elif self._fd < 0:
            log.error("agent output %s: its pipe was lost (%s)", self.path, os.strerror(err))
            self._stop_reading()

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
        if self._readers is not None:
            self._readers.reading(self)
        self._append(data)

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - (self.size - self.file_start)
            if room <= 0:
                self._rotate()
                continue
            piece = view[:room]
            if self._file is None:
                self._file = self._open_file()
            self._file.write(piece)
            self.size += len(piece)
            view = view[len(piece):]
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _rotate(self) -> None:
        self._close_file()
        os.replace(self.path, self.rotated)
        self.rotated_start = self.file_start
        self.file_start = self.size
        self._open_file().close()

    def _open_file(self) -> FileIO:
        return open(self.path, "ab", buffering=0, opener=private_opener)  # noqa: SIM115

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _stop_reading(self) -> None:
        if self._fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._parked is not None:
            assert self._holder is not None and self._readers is not None
            self._holder.drop(self._parked)
            self._readers.forget(self)
            self._parked = None
        self._at_eof = True
        if self._eof is not None:
            self._eof.set()
        if self._changed is not None:
            self._changed.set()

    async def wait_eof(self, timeout: float) -> bool:
        """Wait until every writer (the agent's whole tree) closed the pipe; False on timeout."""
        if self._at_eof:
            return True  # as a rule by the agent's end: no task and timer for wait_for to make
        if self._eof is None:
            self._eof = asyncio.Event()
        try:
            await asyncio.wait_for(self._eof.wait(), timeout)
            return True
        except TimeoutError:
            return False

    @property
    def pruned(self) -> bool:
        """An ended agent's log whose files are gone: log retention deleted them."""
        return self.closed and _size(self.path) is None and _size(self.rotated) is None

    def close(self) -> None:
        """Stop capturing (the agent is reaped); the file stays for LOGS."""
        self._stop_reading()
        if not self.closed:
            self._close_file()
            self.closed = True

    async def wait_beyond(self, offset: int) -> None:
        """Return once there are bytes past ``offset`` or capture has stopped."""
        while self.size <= offset and not self._at_eof:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    @property
    def finished(self) -> bool:
        return self._at_eof

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


class OutputReaders:
    """The captures whose pipe the kernel reads now (taken from the holder by output), the
    least recently written first: each rests after ``rest_after`` seconds of quiet, and the
    oldest as soon as more than ``most`` are being read (two descriptors each)."""

    def __init__(self, rest_after: float = REST_AFTER, most: int = MAX_READING) -> None:
        self.rest_after = rest_after
        self.most = most
        #: Capture -> loop time of its last output, oldest first.
        self._reading: OrderedDict[LogCapture, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._reading)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reading(self, capture: LogCapture) -> None:
        """``capture`` had output now."""
        assert self._loop is not None
        self._reading[capture] = self._loop.time()
        self._reading.move_to_end(capture)
        while len(self._reading) > self.most:
            oldest, _ = self._reading.popitem(last=False)
            oldest.rest()
        if self._timer is None:
            self._timer = self._loop.call_later(self.rest_after, self._sweep)

    def forget(self, capture: LogCapture) -> None:
        self._reading.pop(capture, None)

    def _sweep(self) -> None:
        assert self._loop is not None
        self._timer = None
        quiet_since = self._loop.time() - self.rest_after
        while self._reading:
            capture, last = next(iter(self._reading.items()))
            if last > quiet_since:
                self._timer = self._loop.call_at(last + self.rest_after, self._sweep)
                return
            del self._reading[capture]
            capture.rest()


# -- retention -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """How many ended agents' logs one project keeps, and for how long (None: no limit)."""

    keep: int | None = 1000
    max_age: float | None = 30 * 24 * 3600.0

    @classmethod
    def from_section(cls, section: Any, where: str, default: Retention) -> Retention:
        if not isinstance(section, Mapping):
            raise ValueError(f"{where}: expected a mapping with keep and max_age, got {section!r}")
        unknown = sorted(set(section) - {"keep", "max_age"})
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; known: ['keep', 'max_age']")
        keep = section.get("keep", default.keep)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ValueError(f"{where}.keep: expected a number of logs (or null: no limit), got {keep!r}")
        max_age = section.get("max_age", default.max_age)
        if max_age is not None:
            max_age = parse_duration(max_age, f"{where}.max_age")
        return cls(keep, max_age)


@dataclass(frozen=True)
class LogSettings:
    """The ``processes.logs`` section: retention of ended agents' logs, with per-project overrides."""

    default: Retention = Retention()
    projects: Mapping[str, Retention] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Any) -> LogSettings:
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ValueError(f"processes.logs: expected a mapping, got {section!r}")
        projects = section.get("projects") or {}
        if not isinstance(projects, Mapping):
            raise ValueError(f"processes.logs.projects: expected project: {{keep, max_age}}, got {projects!r}")
        default = Retention.from_section({k: v for k, v in section.items() if k != "projects"},
                                         "processes.logs", Retention())
        overrides = {}
        for name, value in projects.items():
            if not isinstance(name, str) or not _PROJECT.match(name):
                raise ValueError(f"processes.logs.projects: {name!r} is not a project name")
            overrides[name] = Retention.from_section(value, f"processes.logs.projects.{name}", default)
        return cls(default, overrides)

    def of(self, project: str | None) -> Retention:
        return self.projects.get(project, self.default) if project is not None else self.default


class LogRetention:
    """Ended agents' logs, oldest first per project; deletes those the settings no longer keep."""

    def __init__(self, directory: Path, settings: LogSettings) -> None:
        self.directory = directory
        self.settings = settings
        #: Per project (None: agents of none): (when the agent ended, its log's path), oldest first.
        self._ended: dict[str | None, deque[tuple[float, Path]]] = {}
        self._made: set[str] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        #: Logs deleted so far (their agents' ``.log`` and ``.log.1`` together count one).
        self.deleted = 0

    def path_for(self, name: str, agent_id: str, project: str | None) -> Path:
        """Where a new agent's log goes: a project's logs share a directory, retained together."""
        if project is None:
            return self.directory / f"{name}-{agent_id}.log"
        directory = self.directory / project
        if project not in self._made:
            private_dir(directory)
            self._made.add(project)
        return directory / f"{name}-{agent_id}.log"

    def load(self, now: float | None = None) -> None:
        """Queue the logs earlier kernels left (by their last write), deleting what the settings
        do not keep. Blocking, O(files): once, in a thread, before any agent runs."""
        found: dict[str | None, list[tuple[float, Path]]] = {}
        for project, directory in self._directories():
            newest: dict[Path, float] = {}
            with os.scandir(directory) as entries:
                for entry in entries:
                    base = entry.name[:-2] if entry.name.endswith(".log.1") else entry.name
                    if not base.endswith(".log") or not entry.is_file(follow_symlinks=False):
                        continue
                    path = directory / base
                    newest[path] = max(newest.get(path, 0.0), entry.stat(follow_symlinks=False).st_mtime)
            found[project] = sorted((mtime, path) for path, mtime in newest.items())
        for project, logs in found.items():
            self._ended[project] = deque(logs)
            doomed = self._overflow(project) + self._expired(project, time.time() if now is None else now)
            self.deleted += len(doomed)
            _remove(doomed)

    def ended(self, path: Path, project: str | None, at: float) -> None:
        """An agent ended: its log is queued, and the project's oldest past ``keep`` goes now
        (one log per end: two unlinks, so WAIT's answer finds it gone)."""
        self._ended.setdefault(project, deque()).append((at, path))
        doomed = self._overflow(project)
        self.deleted += len(doomed)
        _remove(doomed)

    def sweep(self, now: float | None = None) -> None:
        """Delete the logs past their project's ``max_age``; O(projects + what it deletes), the
        deleting in a thread (an idle day may age out many at once)."""
        now = time.time() if now is None else now
        doomed = [path for project in list(self._ended) for path in self._expired(project, now)]
        if not doomed:
            return
        self.deleted += len(doomed)
        try:
            asyncio.get_running_loop().run_in_executor(None, _remove, doomed)
        except RuntimeError:
            _remove(doomed)

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.sweep()
            self._sweeper = loop.call_later(SWEEP_EVERY, tick)

        self._sweeper = loop.call_later(SWEEP_EVERY, tick)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _directories(self) -> list[tuple[str | None, Path]]:
        found: list[tuple[str | None, Path]] = [(None, self.directory)]
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and _PROJECT.match(entry.name):
                    found.append((entry.name, Path(entry.path)))
                    self._made.add(entry.name)
        return found

    def _overflow(self, project: str | None) -> list[Path]:
        queue, keep = self._ended[project], self.settings.of(project).keep
        return [queue.popleft()[1] for _ in range(len(queue) - keep)] if keep is not None else []

    def _expired(self, project: str | None, now: float) -> list[Path]:
        queue, max_age = self._ended[project], self.settings.of(project).max_age
        doomed: list[Path] = []
        while max_age is not None and queue and now - queue[0][0] > max_age:
            doomed.append(queue.popleft()[1])
        if not queue:
            del self._ended[project]
        return doomed


def _remove(paths: list[Path]) -> None:
    for path in paths:
        for victim in (path, path.with_name(path.name + ".1")):
            try:
                os.unlink(victim)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("agent log %s past its retention not deleted: %s", victim, exc)
