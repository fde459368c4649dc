"""One SQLite file owned by one writer thread that group-commits.

Every operation is a function ``fn(conn) -> result`` submitted to the thread. The
thread takes everything queued, runs it inside a single ``BEGIN IMMEDIATE ...
COMMIT`` (each operation inside its own SAVEPOINT, so one failing operation rolls
back alone), and only after the COMMIT returned resolves the callers' futures.
With ``synchronous=FULL`` in WAL mode the commit has fsynced the WAL, so a reply
means the write is on disk; many concurrent writers share one fsync. The event
loop only enqueues and awaits, it never touches SQLite, and each committed batch
wakes it once (one ``call_soon_threadsafe`` settles all of the batch's futures).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ujson

from ..errors import InvalidArgument, TooLarge, Unavailable
from ..parking import ParkingQueue
from .private import prepare_sqlite

log = logging.getLogger("agentos.state.database")

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

#: Operations sharing one transaction (one fsync). Each committed batch resumes its callers
#: in one event-loop turn, so this also bounds how long other syscalls wait behind a burst:
#: 16 keeps most of the group-commit throughput (benchmarks/bench_state.py).
MAX_BATCH = 16

_STOP = object()


class DatabaseClosed(RuntimeError):
    """An operation was submitted after ``close()``."""


class Database:
    """A SQLite database in WAL mode whose every access runs on its own thread."""

    def __init__(self, path: Path | str, schema: str) -> None:
        self.path = Path(path)
        self._schema = schema
        # Idle, the writer waits parked (agentos.parking): it costs the event loop nothing.
        self._queue = ParkingQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ready = concurrent.futures.Future[None]()
        #: Transactions committed so far (each may carry many operations).
        self.commits = 0

    def open(self) -> None:
        """Create the file and schema and start the thread; raises if SQLite cannot open it."""
        if self._thread is not None:
            raise RuntimeError(f"{self.path} is already open")
        prepare_sqlite(self.path)
        self._thread = threading.Thread(target=self._run, name=f"sqlite:{self.path.name}",
                                        daemon=True)
        self._thread.start()
        self._ready.result()

    def close(self) -> None:
        """Finish every queued operation, then close the connection and join the thread."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn`` from any thread; the future resolves once its transaction committed."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put(fn, future, None)
        return future

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread and await its committed result.

        SQLite failing underneath (disk full, I/O error, database locked by another
        process) is ``Unavailable`` for the caller, not an internal error.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(fn, future, loop)
        try:
            return await future
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"{self.path.name}: {exc}") from None

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking form of :meth:`run`, for code outside an event loop."""
        return self.submit(fn).result()

    def _put(self, fn: Operation, future: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._closed or self._thread is None:
            raise DatabaseClosed(f"database {self.path} is not open")
        self._queue.put(_Pending(fn, future, loop))

    # -- the thread ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 adds nothing.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit fsyncs the WAL, so an acknowledged write survives power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(self._schema)
        return conn

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # noqa: BLE001 - open() re-raises it in the opener's thread
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                work = [item for item in batch if item is not _STOP and item.start()]
                if work:
                    self._commit_batch(conn, work)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, work: list[_Pending]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in work:
                conn.execute("SAVEPOINT op")
                try:
                    item.value = item.fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed back to the caller's future
                    conn.execute("ROLLBACK TO op")
                    item.error = exc
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("transaction on %s failed: %s", self.path, exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for item in work:
                item.error = exc
        else:
            self.commits += 1
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for item in work:
            if item.loop is None:
                item.settle()
            else:
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more


class _Pending:
    """One queued operation, its caller's future, and (once run) its outcome."""

    __slots__ = ("error", "fn", "future", "loop", "value")

    def __init__(self, fn: Operation, future: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.value: Any = None
        self.error: BaseException | None = None

    def start(self) -> bool:
        """False if the caller gave up before its turn: then nothing is done for it."""
        if self.loop is None:
            # Once running, a concurrent future can no longer be cancelled.
            return bool(self.future.set_running_or_notify_cancel())
        # An asyncio future is the loop's; reading its state from here is only a hint,
        # and a late cancellation just means an answer nobody reads.
        return not self.future.cancelled()

    def settle(self) -> None:
        """Hand the outcome to the caller (on the caller's loop for asyncio futures)."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.value)


def _settle_all(items: list[_Pending]) -> None:
    for item in items:
        item.settle()


def encode_bounded(value: Any, limit: int, what: str) -> str:
    """``value`` as the JSON text to store; InvalidArgument or TooLarge before any I/O.

    Strict JSON, as requests and replies are: NaN, Infinity and lone surrogates are refused.
    """
    try:
        text = ujson.dumps(value, ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
    except (TypeError, OverflowError, UnicodeEncodeError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from None
    if size > limit:
        raise TooLarge(f"{what} of {size} bytes is over the {limit}-byte limit", size=size, limit=limit)
    return text


#: Longest principal or mailbox address a request may name (a principal is a path of names).
MAX_ADDRESS_BYTES = 4096


def check_text(value: Any, what: str, max_bytes: int) -> str:
    """``value`` as a non-empty string SQLite can store (UTF-8, so no lone surrogate) of at
    most ``max_bytes``; InvalidArgument naming ``what`` otherwise."""
    if isinstance(value, str) and value:
        try:
            if len(value.encode()) <= max_bytes:
                return value
        except UnicodeEncodeError:
            pass
    raise InvalidArgument(f"{what} must be a non-empty UTF-8 string of at most {max_bytes} bytes, "
                          f"got {_preview(value)}", field=what)


def _preview(value: Any) -> str:
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."
