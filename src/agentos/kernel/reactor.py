"""Pure-Python twin of ``agentos._fast.reactor``: the kernel's epoll reactor.

The reactor is an asyncio *selector*: the kernel runs a stock
``asyncio.SelectorEventLoop`` on it, so one epoll set and one thread serve both
the agentos clients (handled here) and every fd asyncio itself watches (aiohttp,
subprocess pipes, the loop's self-pipe), which ``select()`` hands back as usual.

Inside ``select()`` the reactor accepts clients, reads, splits frames, answers
NOOP itself and queues replies; any other frame goes to ``on_frame``. It
returns to the loop only when asyncio has something to do (a ready fd of its
own, a frame or event handed to a callback, or the timeout the loop asked for), so NOOP traffic
never enters the loop at all. Replies queued by handlers are flushed at the
next ``select()``, batching many replies into one ``send``; a connection's last
syscall in flight is answered at once instead (nothing could join its batch, and the
caller would wait for the rest of the loop iteration).

Short loop iterations: clients are served only inside ``select()``, so a NOOP waits
for every callback of the loop iteration it arrives in. Each ``select()`` therefore
hands the loop at most ``batch`` frames and at most ``batch`` of asyncio's ready fds.
The rest wait, in order, for the next ``select()``, which then does not block: frames
stay in their connection (which is not read meanwhile), fds in an ordered backlog
merged with what epoll reports again (it is level-triggered). A burst of 1000
requests, or 32 model answers landing together, thus becomes many short iterations
with clients served between them, instead of one long one. Within an iteration that
still runs long, the kernel's loop (``kernel/loop.py``) calls ``serve_clients()``
between callbacks.

Bounded memory: a connection whose unsent replies pass ``high_water`` bytes, or
that has ``max_inflight`` syscalls running, is not read until it drains.

Sliced accepting: one wake-up of the listener accepts at most ``ACCEPT_BATCH``
clients; the rest wait in the listen backlog, which stays readable, for the next
round, after the other ready fds had theirs.

Out of fds: when ``accept`` fails for lack of fds, one fd kept in reserve is
spent on each waiting client in turn (up to ``ACCEPT_BATCH`` a round): accepted
on it, told ``busy`` and closed, rather than left hanging in the backlog. The
listener stays watched, so clients arriving later are answered as promptly and a
drained backlog leaves nothing to spin on. Where no client can be refused (out of
memory, or the reserve fd lost) the listener leaves epoll (a backlog that stays
readable would make every round spin) until ``accept_backoff`` seconds pass or a
connection closes.
"""
from __future__ import annotations

import errno
import os
import queue
import resource
import select as _select
import selectors
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .._reactor_common import (
    ACCEPT_BATCH,
    DEFAULT_BATCH,
    OUT_OF_FILES,
    KeyMap,
    fileobj_to_fd,
    log,
    log_accept_paused,
    log_accept_resumed,
    protocol_error_payload,
    refusal_frame,
    to_epoll,
)
from ..errors import ProtocolError
from ..protocol.codec import Frame, FrameDecoder, append_frame
from ..protocol.constants import DEFAULT_MAX_PAYLOAD, Flag

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

#: The compiled reactor counts the threads idling in its ParkingQueue, to keep the GIL while it
#: waits when nobody else could want it; this reactor always releases it, so a plain queue serves.
ParkingQueue = queue.SimpleQueue

_EPOLLIN = _select.EPOLLIN
_EPOLLOUT = _select.EPOLLOUT
_EPOLLERR_HUP = _select.EPOLLERR | _select.EPOLLHUP
_RECV_SIZE = 256 * 1024
_MAX_EVENTS = 256
_PEERCRED = struct.Struct("3i")
_REPLY = int(Flag.REPLY)
_ERROR_REPLY = int(Flag.REPLY | Flag.ERROR)
_END_OF_STREAM = int(Flag.STREAM | Flag.END)
#: accept() errors that mean "no room for one more client": pause accepting, never spin.
_ACCEPT_STARVED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

FrameHandler = Callable[["Connection", int, int, int, bytes], None]
ConnectionHandler = Callable[["Connection"], None]


def raise_fd_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns ``(before, now)``.

    The soft limit (often 1024) exists for programs that use select(); the reactor
    uses epoll, so every fd up to the hard limit can hold a connection.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def open_spare() -> int:
    """The fd kept in reserve for refusing clients when all others are in use (-1 if none)."""
    try:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


class Connection:
    """One client socket: its decoder, its write queue and its accounting."""

    __slots__ = ("fd", "peer_pid", "peer_uid", "peer_gid", "context", "closed", "inflight",
                 "_reactor", "_sock", "_decoder", "_out", "_mask", "_read_eof", "_closing",
                 "_throttled", "_input", "_failure", "_backlogged", "__weakref__")

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        self._reactor = reactor
        self._sock = sock
        self.fd = sock.fileno()
        try:
            pid, uid, gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            pid, uid, gid = 0, -1, -1
        self.peer_pid, self.peer_uid, self.peer_gid = pid, uid, gid
        #: Set by the kernel: who this connection is (an ``Identity``).
        self.context: Any = None
        self.closed = False
        #: Syscalls dispatched to Python and not yet answered.
        self.inflight = 0
        self._decoder = FrameDecoder(reactor.max_payload)
        self._out = bytearray()
        self._mask = _EPOLLIN
        self._read_eof = False
        self._closing = False
        self._throttled = False
        #: Frames read and not yet served (the batch ran out), then the error that ended them.
        self._input: deque[Frame] = deque()
        self._failure: ProtocolError | None = None
        #: In the reactor's backlog: frames wait in ``_input`` for the next ``select()``.
        self._backlogged = False

    @property
    def write_buffered(self) -> int:
        """Bytes queued for this client and not yet sent."""
        return len(self._out)

    def send(self, opcode: int, flags: int, request_id: int, payload: bytes = b"") -> None:
        """Queue one frame. A final reply (not a mid-stream chunk) ends one in-flight syscall."""
        if self.closed:
            return
        append_frame(self._out, opcode, request_id, payload, flags)
        if len(self._out) > self._reactor.high_water:
            # Armed here, where the kernel decides to wait, so on_drain is sure to follow.
            self._throttled = True
        if flags & _REPLY and (not flags & Flag.STREAM or flags & _END_OF_STREAM == _END_OF_STREAM
                               or flags & Flag.ERROR):
            self.inflight -= 1
            if not self.inflight and not (self._read_eof or self._closing or self._throttled):
                # The connection's last syscall answered: no other reply can join this one
                # in a batch, so it goes now instead of at the next select(), a loop pass on.
                self._flush()
                return
        self._reactor._dirty.add(self)

    def close(self) -> None:
        """Drop the connection now; queued replies are discarded."""
        self._reactor._close(self)

    def close_with_error(self, payload: bytes) -> None:
        """Send one connection-level ERROR frame (opcode 0, request 0), then close."""
        append_frame(self._out, 0, 0, payload, _ERROR_REPLY)
        self._closing = True
        self._reactor._dirty.add(self)
        self._update_interest()

    # -- reactor side ---------------------------------------------------------

    def _on_readable(self) -> None:
        """Read what is there: answer NOOPs, hand other frames to ``on_frame``."""
        reactor = self._reactor
        if self._read_eof:
            # Reading is off, so this is EPOLLHUP/ERR: the peer is gone for good, and a
            # level-triggered HUP would otherwise fire on every round until we close.
            reactor._close(self)
            return
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            reactor._close(self)
            return
        if not data:
            self._read_eof = True
            self._update_interest()
            return
        try:
            self._input.extend(self._decoder.feed(data))
        except ProtocolError as exc:
            # Frames ahead of the bad header are served first, as the compiled twin does.
            self._input.extend(exc.frames)
            self._failure = exc
        self._serve_input()

    def _serve_input(self) -> None:
        """Serve the frames read, in order, until the reactor's batch for this round is spent."""
        reactor = self._reactor
        pending = self._input
        while pending:
            frame = pending[0]
            if frame.flags:
                self._fail(ProtocolError(
                    f"request {frame.request_id} has flags 0x{frame.flags:x}; requests carry none"))
                return
            if frame.opcode == 0:
                pending.popleft()
                append_frame(self._out, 0, frame.request_id, frame.payload, _REPLY)
                reactor._dirty.add(self)
                continue
            if reactor._budget <= 0:
                if not self._backlogged:
                    self._backlogged = True
                    reactor._backlog.append(self)
                break
            reactor._budget -= 1
            pending.popleft()
            self.inflight += 1
            reactor._woke = True
            try:
                reactor.on_frame(self, frame.opcode, frame.flags, frame.request_id,
                                 bytes(frame.payload))
            except Exception:
                # Escaping select(), it would end the loop that runs it, and the kernel with it.
                log.exception("on_frame failed for opcode 0x%02x", frame.opcode)
            if self.closed:
                return
        else:
            if self._failure is not None:
                self._fail(self._failure)
                return
        self._update_interest()

    def _fail(self, exc: Exception) -> None:
        """A bad frame: answer with a protocol error, flush it, then close."""
        self._input.clear()  # Nothing after a bad frame is served, even from the backlog.
        self._failure = None
        self.close_with_error(protocol_error_payload(exc))

    def _flush(self) -> None:
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._reactor._close(self)
                return
            del self._out[:sent]
        self._update_interest()

    def _update_interest(self) -> None:
        if self.closed:
            return
        reactor = self._reactor
        pending = len(self._out)
        if (self._closing or self._read_eof) and not pending and (
                self._closing or (self.inflight <= 0 and not self._input)):
            reactor._close(self)
            return
        if self._throttled and pending <= reactor.low_water:
            self._throttled = False
            reactor._woke = True
            reactor.on_drain(self)
            if self.closed:
                return  # on_drain closed it: its fd is out of epoll, maybe reused already
        elif pending > reactor.high_water:
            self._throttled = True
        # Frames still waiting for a batch: read no more until they are served.
        want_read = not (self._closing or self._read_eof or self._throttled or self._input
                         or self.inflight >= reactor.max_inflight)
        mask = (_EPOLLIN if want_read else 0) | (_EPOLLOUT if pending else 0)
        if mask != self._mask:
            self._mask = mask
            reactor._epoll.modify(self.fd, mask)


class Reactor(selectors.BaseSelector):
    """An epoll selector that also serves agentos clients (see the module docstring)."""

    def __init__(self, on_frame: FrameHandler, on_close: ConnectionHandler,
                 on_drain: ConnectionHandler, *, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 high_water: int = 4 * 1024 * 1024, low_water: int = 1024 * 1024,
                 max_inflight: int = 4096, accept_backoff: float = 0.5,
                 batch: int = DEFAULT_BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.on_frame = on_frame
        self.on_close = on_close
        self.on_drain = on_drain
        self.on_accept: ConnectionHandler | None = None
        self.max_payload = max_payload
        self.high_water = high_water
        self.low_water = low_water
        self.max_inflight = max_inflight
        #: Seconds accepting stays paused after running out of fds (unless a connection closes).
        self.accept_backoff = accept_backoff
        #: Frames handed to ``on_frame``, and asyncio fds returned, per ``select()`` at most.
        self.batch = batch
        self._epoll = _select.epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._conns: dict[int, Connection] = {}
        self._listener: socket.socket | None = None
        self._spare = -1
        #: While accepting is paused: when to watch the listener again.
        self._resume_at: float | None = None
        #: Clients refused since accepting last failed (None: it has not failed).
        self._refused: int | None = None
        self._dirty: set[Connection] = set()
        #: Set whenever a callback ran: it may have scheduled work, so select() must return.
        self._woke = False
        #: Frames this round may still hand to ``on_frame``.
        self._budget = batch
        #: Connections holding frames for a later round, oldest first.
        self._backlog: list[Connection] = []
        #: asyncio's fds found ready and not yet returned (fd -> epoll events), oldest first.
        self._ready_fds: dict[int, int] = {}
        #: When clients were last served (``select()`` or ``serve_clients()``), monotonic.
        self._served_at = 0.0
        #: ``select()`` calls so far: the loop's iterations, for the loop to count its callbacks by.
        self.rounds = 0
        #: Waits that kept the GIL: always 0 here (only the compiled reactor can keep it).
        self.waits_holding_gil = 0

    # -- serving --------------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        """Serve clients connecting to this listening socket (the reactor takes it over)."""
        sock.setblocking(False)
        self._listener = sock
        self._epoll.register(sock.fileno(), _EPOLLIN)
        self._spare = open_spare()

    def stop_listening(self) -> None:
        """Accept no more clients; connections already made carry on."""
        if self._listener is not None:
            if self._resume_at is None:
                self._epoll.unregister(self._listener.fileno())
            self._resume_at = None
            self._listener.close()
            self._listener = None
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1

    def adopt(self, sock: socket.socket) -> Connection:
        """Serve an already-connected socket (the kernel's end of an agent's socketpair)."""
        sock.setblocking(False)
        conn = Connection(self, sock)
        self._conns[conn.fd] = conn
        self._epoll.register(conn.fd, _EPOLLIN)
        return conn

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    def _accept(self) -> None:
        """Accept up to ``ACCEPT_BATCH`` waiting clients; the rest wait for the next round."""
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_STARVED:
                    raise
                self._starve(exc.errno)
                return
            if self._refused is not None:
                log_accept_resumed(self._refused)
                self._refused = None
            conn = self.adopt(sock)
            if self.on_accept is not None:
                self._woke = True
                self.on_accept(conn)

    def _starve(self, err: int) -> None:
        """No room for one more client: refuse a batch of those waiting; if none can be refused,
        stop watching the listener for a while."""
        assert self._listener is not None
        refusing = err in OUT_OF_FILES and self._spare >= 0
        if self._refused is None:
            self._refused = 0
            log_accept_paused(err, self.accept_backoff, refusing)
        if refusing and self._refuse_waiting(err):
            return  # Still watched: clients left waiting are refused next round.
        self._epoll.unregister(self._listener.fileno())
        self._resume_at = _monotonic() + self.accept_backoff

    def _refuse_waiting(self, err: int) -> bool:
        """Free the spare fd and spend it on each waiting client in turn: ``busy``, then close.
        False if that stopped short of the batch or the drained backlog (the freed fd was
        taken meanwhile), or the spare could not be had back: refusing cannot go on."""
        assert self._listener is not None and self._refused is not None
        frame = refusal_frame(err, self.accept_backoff)
        os.close(self._spare)
        going = True
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                break  # Drained.
            except OSError:
                going = False  # Another thread took the freed fd.
                break
            with sock:
                try:
                    sock.send(frame, socket.MSG_DONTWAIT)
                except OSError:
                    pass  # That client is gone already.
            self._refused += 1
        self._spare = open_spare()
        return going and self._spare >= 0

    def _resume(self) -> None:
        assert self._listener is not None
        self._resume_at = None
        self._epoll.register(self._listener.fileno(), _EPOLLIN)
        if self._spare < 0:
            self._spare = open_spare()

    def _accept_wait(self, wait: float) -> float:
        """``wait``, shortened so accepting resumes on time; resumes it if that is due."""
        assert self._resume_at is not None
        left = self._resume_at - _monotonic()
        if left <= 0:
            self._resume()
            return wait
        return left if wait < 0 else min(wait, left)

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._dirty.discard(conn)
        conn._input.clear()
        del self._conns[conn.fd]
        # Out of epoll before close: the fd number may be reused at once.
        self._epoll.unregister(conn.fd)
        conn._sock.close()
        conn._out.clear()
        if self._resume_at is not None:
            self._resume()  # Its fd is free for the next client.
        self._woke = True
        self.on_close(conn)

    def _serve_backlog(self) -> None:
        """Serve connections whose frames waited for this round, oldest first."""
        waiting, self._backlog = self._backlog, []
        for i, conn in enumerate(waiting):
            if self._budget <= 0:
                # Not reached this round: they stay ahead of those served just now.
                self._backlog[:0] = waiting[i:]
                return
            conn._backlogged = False
            if not conn.closed:
                conn._serve_input()

    def _take_ready(self) -> list[tuple[selectors.SelectorKey, int]]:
        """Up to ``batch`` of asyncio's ready fds, oldest first; the rest wait for the next round."""
        ready: list[tuple[selectors.SelectorKey, int]] = []
        pending = self._ready_fds
        while pending and len(ready) < self.batch:
            fd = next(iter(pending))
            ev = pending.pop(fd)
            key = self._keys.get(fd)
            if key is None:
                continue  # Unregistered while it waited.
            mask = 0
            if ev & (_EPOLLIN | _EPOLLERR_HUP):
                mask |= EVENT_READ
            if ev & (_EPOLLOUT | _EPOLLERR_HUP):
                mask |= EVENT_WRITE
            mask &= key.events
            if mask:
                ready.append((key, mask))
        return ready

    def _flush_dirty(self) -> None:
        while self._dirty:
            dirty, self._dirty = self._dirty, set()
            for conn in dirty:
                if not conn.closed:
                    conn._flush()

    # -- selector API (what asyncio calls) --------------------------------------

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj_to_fd(fileobj)
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._epoll.register(fd, to_epoll(events))
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj_to_fd(fileobj)
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._ready_fds.pop(fd, None)  # Its fd number may come back as someone else's.
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # Already closed by its owner; epoll dropped it then.
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj_to_fd(fileobj)
        try:
            key = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self._epoll.modify(fd, to_epoll(events))
        key = key._replace(events=events, data=data)
        self._keys[fd] = key
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return KeyMap(self._keys)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.rounds += 1
        self._flush_dirty()
        if self._woke:
            # That flush called back into the loop (a drain, a close): its callbacks are due
            # now, and the loop computed its timeout before they existed. Waiting here would
            # sleep through them (a stream stalled for good on a drained connection).
            self._woke = False
            return []
        self._budget = self.batch
        if self._backlog:
            self._serve_backlog()
        poll = self._epoll.poll
        remaining = -1.0 if timeout is None else max(0.0, timeout)
        if self._woke or self._backlog or self._ready_fds:
            # Frames just handed over, or work left over from earlier rounds, are due now.
            remaining = 0.0
        deadline = None if timeout is None else _monotonic() + remaining
        ready_fds = self._ready_fds
        while True:
            try:
                events = poll(remaining if self._resume_at is None else self._accept_wait(remaining),
                              _MAX_EVENTS)
            except InterruptedError:
                events = []
            self._handle(events)
            ready = self._take_ready() if ready_fds else []
            self._flush_dirty()
            if ready or self._woke or remaining == 0:
                self._woke = False
                self._served_at = _monotonic()
                return ready
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    self._served_at = _monotonic()
                    return ready

    def _handle(self, events: list[tuple[int, int]]) -> None:
        """Serve the clients among ``events``; asyncio's fds join ``_ready_fds``."""
        ready_fds = self._ready_fds
        for fd, ev in events:
            conn = self._conns.get(fd)
            if conn is not None:
                if ev & (_EPOLLIN | _EPOLLERR_HUP):
                    conn._on_readable()
                if not conn.closed and ev & _EPOLLOUT:
                    self._dirty.add(conn)
                continue
            if fd in self._keys:
                # Still ready if it waited: epoll reports it again, merged with its turn.
                ready_fds[fd] = ready_fds.get(fd, 0) | ev
            elif self._listener is not None and fd == self._listener.fileno():
                self._accept()

    def serve_clients(self, min_gap: float = 0.0) -> bool:
        """Serve clients now, between two of the loop's callbacks, unless they were served
        less than ``min_gap`` seconds ago; True if it did.

        One epoll_wait that does not block: clients read, NOOPs answered, accepted, frames
        handed to ``on_frame`` while this round's batch lasts, and what that queued sent. Other
        replies wait for ``select()``, which sends each connection's in one ``send`` (flushing
        them all here too would cost a send and a wake-up of the client per reply). asyncio's
        ready fds are only noted: ``select()`` returns them (their callbacks may run only when
        the loop asks). What the callbacks run here schedule is already in the loop's queue, so
        the next ``select()`` need not return early.
        """
        now = _monotonic()
        if now - self._served_at < min_gap:
            return False
        self._served_at = now
        try:
            events = self._epoll.poll(0, _MAX_EVENTS)
        except InterruptedError:
            events = []
        waiting, self._dirty = self._dirty, set()
        self._handle(events)
        self._flush_dirty()
        self._dirty = waiting
        self._woke = False
        return True

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self.stop_listening()
        self._keys.clear()
        self._epoll.close()


_monotonic = __import__("time").monotonic


__all__ = ["Reactor", "Connection", "EVENT_READ", "EVENT_WRITE", "raise_fd_limit", "open_spare"]
