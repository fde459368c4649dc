# cython: language_level=3, wraparound=False, cdivision=True
"""Compiled twin of ``agentos.kernel.reactor`` (read its docstring for the design).

What is in C here: epoll, accept, recv, frame splitting, the NOOP answer, the
per-connection write queues and send. Python is entered only for frames that
need a handler, for the fds asyncio watches, and for connection lifecycle.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport PyObject
from libc.errno cimport errno, EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memmove

from agentos._fast.frame cimport (Header, read_header, header_status, write_header, HEADER_SIZE,
                                  HEADER_OK, FLAG_REPLY, FLAG_ERROR, FLAG_STREAM, FLAG_END)
from agentos._fast.includes.python cimport (PyInterpreterState_Get, PyInterpreterState_ThreadHead,
                                            PyThreadState, PyThreadState_Next)
from agentos._fast.includes.system cimport (
    open, close, O_RDONLY, O_CLOEXEC, timespec, clock_gettime, CLOCK_MONOTONIC,
    socklen_t, ucred, accept4, recv, send, getsockopt, SOL_SOCKET, SO_PEERCRED, MSG_NOSIGNAL,
    MSG_DONTWAIT, SOCK_NONBLOCK, SOCK_CLOEXEC, epoll_event, epoll_create1, epoll_ctl, epoll_wait,
    EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLET, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL,
    EPOLL_CLOEXEC, itimerspec, timerfd_create, timerfd_settime, TFD_NONBLOCK, TFD_CLOEXEC,
    TFD_TIMER_ABSTIME)

import selectors
from queue import SimpleQueue as _SimpleQueue

from agentos.errors import ProtocolError
from agentos.protocol.codec import header_error
from agentos.protocol.constants import DEFAULT_MAX_PAYLOAD
from agentos._reactor_common import (ACCEPT_BATCH, DEFAULT_BATCH, KeyMap, fileobj_to_fd,
                                     log, log_accept_paused, log_accept_resumed,
                                     protocol_error_payload, refusal_frame, to_epoll)

cdef enum:
    MAX_EVENTS = 256
    READ_CHUNK = 256 * 1024
    IN_INITIAL = 64 * 1024
    OUT_INITIAL = 64 * 1024
    SHRINK_ABOVE = 1024 * 1024
    # What an epoll registration's data says the fd is (high 32 bits; the fd is the low 32).
    KIND_LISTENER = 1
    KIND_CONN = 2
    KIND_PY = 3
    KIND_TIMER = 4

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


# Threads waiting, untimed, in ParkingQueue.get, and items put in any ParkingQueue and not yet
# taken. Both change only with the GIL held, each inside one C call, so they agree with each other.
cdef Py_ssize_t _parked = 0
cdef Py_ssize_t _queued = 0


cdef inline bint _gil_unwanted() noexcept:
    """Whether no other thread can want the GIL before this one runs Python code again: each of
    them waits, untimed, in a ParkingQueue, and none of those holds an item. Only Python code
    (which needs the GIL) puts into one, so epoll_wait may sleep without releasing it."""
    if _queued:
        return False
    cdef PyThreadState* tstate = PyInterpreterState_ThreadHead(PyInterpreterState_Get())
    cdef Py_ssize_t others = -1
    while tstate != NULL:
        others += 1
        if others > _parked:
            return False
        tstate = PyThreadState_Next(tstate)
    return others == _parked


@cython.final
cdef class ParkingQueue:
    """``queue.SimpleQueue``'s put, get and get_nowait (what the kernel's threads and
    ``ThreadPoolExecutor`` use), with the untimed waiters counted by the reactor: when every thread but
    the loop's waits in one and none holds an item, the reactor keeps the GIL in ``epoll_wait``
    (~400 instructions less per wait). For the kernel's worker threads, which idle for long."""

    cdef object _items
    cdef Py_ssize_t _count  # this queue's share of _queued

    def __cinit__(self):
        self._items = _SimpleQueue()

    def __dealloc__(self):
        global _queued
        _queued -= self._count  # items nobody will take any more

    def put(self, item):
        global _queued
        self._items.put(item)
        self._count += 1
        _queued += 1

    def get(self, block=True, timeout=None):
        global _parked, _queued
        if not block or timeout is not None:
            # A timed wait can end with nothing put: such a waiter may want the GIL any time.
            item = self._items.get(block, timeout)
        else:
            _parked += 1
            try:
                item = self._items.get()
            finally:
                _parked -= 1
        self._count -= 1
        _queued -= 1
        return item

    def get_nowait(self):
        return self.get(False)


cdef inline uint64_t _tag(int kind, int fd) noexcept nogil:
    return (<uint64_t>kind << 32) | <uint32_t>fd


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline int _open_spare() noexcept nogil:
    # The fd kept in reserve for refusing clients when all others are in use (-1 if none).
    return open("/dev/null", O_RDONLY | O_CLOEXEC)


cdef inline bint _ends_request(int flags) noexcept nogil:
    # A final reply ends one in-flight syscall; a mid-stream chunk does not.
    if not flags & FLAG_REPLY:
        return False
    if flags & FLAG_ERROR or not flags & FLAG_STREAM:
        return True
    return (flags & FLAG_END) != 0


@cython.final
cdef class Connection:
    """One client socket: its input buffer, its write queue and its accounting."""

    cdef readonly int fd
    cdef readonly int peer_pid
    cdef readonly int peer_uid
    cdef readonly int peer_gid
    #: Set by the kernel: who this connection is (an ``Identity``).
    cdef public object context
    cdef readonly bint closed
    #: Syscalls dispatched to Python and not yet answered.
    cdef readonly Py_ssize_t inflight
    cdef Reactor reactor
    cdef char* inbuf
    cdef Py_ssize_t in_len, in_cap
    cdef char* outbuf
    cdef Py_ssize_t out_start, out_end, out_cap
    cdef uint32_t mask
    cdef bint read_eof, closing, throttled, dirty
    # In the reactor's backlog: whole frames wait in ``inbuf`` for the next select().
    cdef bint backlogged
    cdef object __weakref__

    def __cinit__(self):
        self.inbuf = NULL
        self.outbuf = NULL
        self.fd = -1

    def __dealloc__(self):
        free(self.inbuf)
        free(self.outbuf)

    @property
    def write_buffered(self):
        """Bytes queued for this client and not yet sent."""
        return self.out_end - self.out_start

    def send(self, int opcode, int flags, unsigned int request_id, payload=b""):
        """Queue one frame. A final reply (not a mid-stream chunk) ends one in-flight syscall."""
        cdef Py_buffer view
        if self.closed:
            return
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            if <unsigned long long>view.len > 0xFFFFFFFF:
                raise ValueError(f"payload of {view.len} bytes does not fit in 32 bits")
            self._queue(<unsigned char>opcode, flags, request_id, <const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if self.out_end - self.out_start > self.reactor.high_water:
            # Armed here, where the kernel decides to wait, so on_drain is sure to follow.
            self.throttled = True
        if _ends_request(flags):
            self.inflight -= 1
            if self.inflight == 0 and not (self.read_eof or self.closing or self.throttled):
                # The connection's last syscall answered: no other reply can join this one
                # in a batch, so it goes now instead of at the next select(), a loop pass on.
                self._flush()
                return
        if not self.dirty:
            self.dirty = True
            self.reactor.dirty.append(self)

    def close(self):
        """Drop the connection now; queued replies are discarded."""
        self.reactor._close(self)

    def close_with_error(self, bytes payload not None):
        """Send one connection-level ERROR frame (opcode 0, request 0), then close."""
        if self.closed:
            return
        self._queue(0, FLAG_REPLY | FLAG_ERROR, 0, payload, len(payload))
        self.closing = True
        self._flush()

    cdef int _queue(self, unsigned char opcode, int flags, uint32_t request_id, const char* data,
                    Py_ssize_t length) except -1:
        cdef Py_ssize_t need = HEADER_SIZE + length
        cdef Py_ssize_t cap
        cdef char* grown
        if self.out_cap - self.out_end < need:
            if self.out_start:
                # Reclaim the sent prefix before growing.
                memmove(self.outbuf, self.outbuf + self.out_start, self.out_end - self.out_start)
                self.out_end -= self.out_start
                self.out_start = 0
            if self.out_cap - self.out_end < need:
                cap = self.out_cap * 2 if self.out_cap else OUT_INITIAL
                while cap - self.out_end < need:
                    cap *= 2
                grown = <char*>realloc(self.outbuf, cap)
                if grown == NULL:
                    raise MemoryError()
                self.outbuf = grown
                self.out_cap = cap
        write_header(self.outbuf + self.out_end, opcode, flags, request_id, <uint32_t>length)
        if length:
            memcpy(self.outbuf + self.out_end + HEADER_SIZE, data, length)
        self.out_end += need
        return 0

    cdef int _grow_in(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.in_cap if self.in_cap else IN_INITIAL
        cdef char* grown
        while cap < need:
            cap *= 2
        if cap != self.in_cap:
            grown = <char*>realloc(self.inbuf, cap)
            if grown == NULL:
                raise MemoryError()
            self.inbuf = grown
            self.in_cap = cap
        return 0

    cdef int _flush(self) except -1:
        cdef ssize_t n
        while self.out_end > self.out_start:
            n = send(self.fd, self.outbuf + self.out_start, self.out_end - self.out_start,
                     MSG_NOSIGNAL | MSG_DONTWAIT)
            if n < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                self.reactor._close(self)
                return 0
            self.out_start += n
        if self.out_start == self.out_end:
            self.out_start = self.out_end = 0
            if self.out_cap > SHRINK_ABOVE:
                # A burst made the queue big; give the memory back once it drained.
                free(self.outbuf)
                self.outbuf = NULL
                self.out_cap = 0
        self._update_interest()
        return 0

    cdef int _fail(self, exc) except -1:
        """A bad frame: answer with a protocol error, flush it, then close."""
        self.in_len = 0  # Nothing after a bad frame is served, even from the backlog.
        self.close_with_error(protocol_error_payload(exc))
        return 0

    cdef int _update_interest(self) except -1:
        cdef Reactor reactor = self.reactor
        cdef Py_ssize_t pending = self.out_end - self.out_start
        cdef uint32_t mask
        cdef epoll_event ev
        if self.closed:
            return 0
        if (self.closing or self.read_eof) and not pending and (
                self.closing or (self.inflight <= 0 and not self.backlogged)):
            reactor._close(self)
            return 0
        if self.throttled and pending <= reactor.low_water:
            self.throttled = False
            reactor.woke = True
            reactor.on_drain(self)
            if self.closed:
                return 0
        elif pending > reactor.high_water:
            self.throttled = True
        mask = 0
        # Frames still waiting for a batch: read no more until they are served.
        if not (self.closing or self.read_eof or self.throttled or self.backlogged
                or self.inflight >= reactor.max_inflight):
            mask |= EPOLLIN
        if pending:
            mask |= EPOLLOUT
        if mask != self.mask:
            self.mask = mask
            ev.events = mask
            ev.data.u64 = _tag(KIND_CONN, self.fd)
            epoll_ctl(reactor.epfd, EPOLL_CTL_MOD, self.fd, &ev)
        return 0

    cdef int _on_readable(self) except -1:
        """Read, then serve what was read."""
        cdef Reactor reactor = self.reactor
        cdef ssize_t n
        if self.read_eof:
            # Reading is off, so this is EPOLLHUP/ERR: the peer is gone for good, and a
            # level-triggered HUP would otherwise fire on every round until we close.
            reactor._close(self)
            return 0
        if self.in_cap - self.in_len < READ_CHUNK // 4:
            self._grow_in(self.in_len + READ_CHUNK)
        n = recv(self.fd, self.inbuf + self.in_len, self.in_cap - self.in_len, MSG_DONTWAIT)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            reactor._close(self)
            return 0
        if n == 0:
            self.read_eof = True
            self._update_interest()
            return 0
        self.in_len += n
        return self._serve_input()

    cdef int _serve_input(self) except -1:
        """Split frames, in order: answer NOOPs here, hand others to ``on_frame`` while the
        reactor's batch for this round lasts; the rest stay in ``inbuf`` for a later round."""
        cdef Reactor reactor = self.reactor
        cdef Py_ssize_t pos = 0
        cdef Header h
        cdef int status
        cdef const char* p
        while self.in_len - pos >= HEADER_SIZE:
            p = self.inbuf + pos
            read_header(p, &h)
            status = header_status(&h, reactor.max_payload)
            if status != HEADER_OK:
                self._fail(header_error(h.magic, h.version, h.flags, h.reserved, h.length,
                                        reactor.max_payload))
                return 0
            if h.flags:
                self._fail(ProtocolError(f"request {h.request_id} has flags 0x{h.flags:x}; "
                                         "requests carry none"))
                return 0
            if self.in_len - pos - HEADER_SIZE < <Py_ssize_t>h.length:
                if HEADER_SIZE + <Py_ssize_t>h.length > self.in_cap:
                    # Make room now for the whole frame, so the next recv can complete it.
                    if pos:
                        memmove(self.inbuf, self.inbuf + pos, self.in_len - pos)
                        self.in_len -= pos
                        pos = 0
                    self._grow_in(HEADER_SIZE + h.length)
                break
            if h.opcode == 0:
                self._queue(0, FLAG_REPLY, h.request_id, p + HEADER_SIZE, h.length)
            elif reactor.budget <= 0:
                if not self.backlogged:
                    self.backlogged = True
                    reactor.backlog.append(self)
                break
            else:
                reactor.budget -= 1
                self.inflight += 1
                reactor.woke = True
                payload = PyBytes_FromStringAndSize(p + HEADER_SIZE, h.length)
                try:
                    reactor.on_frame(self, h.opcode, h.flags, h.request_id, payload)
                except Exception:
                    log.exception("on_frame failed for opcode 0x%02x", h.opcode)
                if self.closed:
                    return 0
            pos += HEADER_SIZE + h.length
        if pos:
            if pos < self.in_len:
                memmove(self.inbuf, self.inbuf + pos, self.in_len - pos)
            self.in_len -= pos
        if self.in_len == 0 and self.in_cap > SHRINK_ABOVE:
            free(self.inbuf)
            self.inbuf = NULL
            self.in_cap = 0
        self._flush()
        return 0


@cython.final
cdef class Reactor:
    """An epoll selector that also serves agentos clients.

    Same API as the Python twin: asyncio's selector methods plus ``listen``,
    ``adopt`` and ``connections``; callbacks ``on_frame``, ``on_close``,
    ``on_drain`` and ``on_accept``.
    """

    cdef readonly int epfd
    # The loop's next deadline (see select()), and when it is armed to fire (0: never armed).
    cdef int timer_fd
    cdef double timer_at
    # Set when epoll reports the timerfd: only then can the deadline have passed.
    cdef bint timer_fired
    cdef public object on_frame, on_close, on_drain, on_accept
    cdef readonly uint32_t max_payload
    cdef readonly Py_ssize_t high_water, low_water, max_inflight
    #: Seconds accepting stays paused after running out of fds (unless a connection closes).
    cdef public double accept_backoff
    cdef object listener
    cdef int listen_fd
    cdef int spare_fd
    # While accepting is paused (the listener out of epoll): when to resume.
    cdef bint paused
    cdef double resume_at
    # Clients refused since accepting last failed (-1: it has not failed).
    cdef Py_ssize_t refused
    cdef dict keys
    cdef dict conns
    # fd -> Connection, borrowed from ``conns``: the hot path looks up without Python ints.
    cdef PyObject** by_fd
    cdef int by_fd_cap
    cdef list dirty
    # Set whenever a callback ran: it may have scheduled work, so select() must return.
    cdef bint woke
    #: Frames handed to ``on_frame``, and asyncio fds returned, per ``select()`` at most.
    cdef readonly int batch
    # Frames this round may still hand to ``on_frame``.
    cdef int budget
    # Connections holding frames for a later round, oldest first.
    cdef list backlog
    # asyncio's fds found ready and not yet returned (fd -> epoll events), oldest first.
    cdef dict ready_fds
    # When clients were last served (select() or serve_clients()), monotonic.
    cdef double served_at
    #: ``select()`` calls so far: the loop's iterations, for the loop to count its callbacks by.
    cdef readonly unsigned long long rounds
    #: Waits in epoll_wait that kept the GIL, no other thread being able to want it meanwhile.
    cdef readonly unsigned long long waits_holding_gil
    cdef epoll_event events[MAX_EVENTS]

    def __cinit__(self):
        self.epfd = -1
        self.timer_fd = -1
        self.listen_fd = -1
        self.spare_fd = -1
        self.refused = -1

    def __init__(self, on_frame, on_close, on_drain, *, max_payload=DEFAULT_MAX_PAYLOAD,
                 high_water=4 * 1024 * 1024, low_water=1024 * 1024, max_inflight=4096,
                 accept_backoff=0.5, batch=DEFAULT_BATCH):
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.on_frame = on_frame
        self.on_close = on_close
        self.on_drain = on_drain
        self.on_accept = None
        self.max_payload = min(max_payload, 0xFFFFFFFF)
        self.high_water = high_water
        self.low_water = low_water
        self.max_inflight = max_inflight
        self.accept_backoff = accept_backoff
        self.batch = batch
        self.budget = batch
        self.backlog = []
        self.ready_fds = {}
        self.keys = {}
        self.conns = {}
        self.dirty = []
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.timer_fd < 0:
            raise OSError(errno, "timerfd_create failed")
        # Edge-triggered: an expiry wakes epoll_wait once, and the timer is never read.
        self._ctl(EPOLL_CTL_ADD, self.timer_fd, EPOLLIN | EPOLLET, KIND_TIMER)

    def __dealloc__(self):
        free(self.by_fd)
        if self.spare_fd >= 0:
            close(self.spare_fd)
        if self.timer_fd >= 0:
            close(self.timer_fd)
        if self.epfd >= 0:
            close(self.epfd)

    cdef int _ctl(self, int op, int fd, uint32_t mask, int kind) except -1:
        cdef epoll_event ev
        ev.events = mask
        ev.data.u64 = _tag(kind, fd)
        if epoll_ctl(self.epfd, op, fd, &ev) < 0:
            raise OSError(errno, f"epoll_ctl({op}) on fd {fd} failed")
        return 0

    # -- serving --------------------------------------------------------------

    def listen(self, sock):
        """Serve clients connecting to this listening socket (the reactor takes it over)."""
        sock.setblocking(False)
        self.listener = sock
        self.listen_fd = sock.fileno()
        self._ctl(EPOLL_CTL_ADD, self.listen_fd, EPOLLIN, KIND_LISTENER)
        self.spare_fd = _open_spare()

    def stop_listening(self):
        """Accept no more clients; connections already made carry on."""
        if self.listener is not None:
            if not self.paused:
                epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.listen_fd, NULL)
            self.paused = False
            self.listener.close()
            self.listener = None
            self.listen_fd = -1
        if self.spare_fd >= 0:
            close(self.spare_fd)
            self.spare_fd = -1

    def adopt(self, sock):
        """Serve an already-connected socket (the kernel's end of an agent's socketpair)."""
        sock.setblocking(False)
        return self._add_connection(sock.detach())

    cdef Connection _add_connection(self, int fd):
        cdef Connection conn = Connection.__new__(Connection)
        cdef PyObject** grown
        cdef int cap, i
        cdef ucred cred
        cdef socklen_t size = sizeof(cred)
        conn.reactor = self
        conn.fd = fd
        if getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) == 0:
            conn.peer_pid, conn.peer_uid, conn.peer_gid = cred.pid, cred.uid, cred.gid
        else:
            conn.peer_pid, conn.peer_uid, conn.peer_gid = 0, -1, -1
        conn.mask = EPOLLIN
        if fd >= self.by_fd_cap:
            cap = max(64, self.by_fd_cap * 2, fd + 1)
            grown = <PyObject**>realloc(self.by_fd, cap * sizeof(PyObject*))
            if grown == NULL:
                close(fd)
                raise MemoryError()
            for i in range(self.by_fd_cap, cap):
                grown[i] = NULL
            self.by_fd = grown
            self.by_fd_cap = cap
        self.conns[fd] = conn
        self.by_fd[fd] = <PyObject*>conn
        try:
            self._ctl(EPOLL_CTL_ADD, fd, EPOLLIN, KIND_CONN)
        except BaseException:
            self.by_fd[fd] = NULL
            del self.conns[fd]
            close(fd)
            conn.closed = True
            raise
        return conn

    @property
    def connections(self):
        return list(self.conns.values())

    cdef int _accept(self) except -1:
        """Accept up to ``ACCEPT_BATCH`` waiting clients; the rest wait for the next round."""
        cdef int fd, err, i, most = ACCEPT_BATCH
        cdef Connection conn
        for i in range(most):
            fd = accept4(self.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN:
                    return 0
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    self._starve(err)
                    return 0
                raise OSError(err, "accept4 on the kernel socket failed")
            if self.refused >= 0:
                log_accept_resumed(self.refused)
                self.refused = -1
            conn = self._add_connection(fd)
            if self.on_accept is not None:
                self.woke = True
                self.on_accept(conn)
        return 0

    cdef int _starve(self, int err) except -1:
        """No room for one more client: refuse a batch of those waiting; if none can be refused,
        stop watching the listener for a while."""
        cdef bint refusing = (err == EMFILE or err == ENFILE) and self.spare_fd >= 0
        if self.refused < 0:
            self.refused = 0
            log_accept_paused(err, self.accept_backoff, refusing)
        if refusing and self._refuse_waiting(err):
            return 0  # Still watched: clients left waiting are refused next round.
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.listen_fd, NULL)
        self.paused = True
        self.resume_at = _now() + self.accept_backoff
        return 0

    cdef int _refuse_waiting(self, int err) except -1:
        """Free the spare fd and spend it on each waiting client in turn: ``busy``, then close.
        0 if that stopped short of the batch or the drained backlog (the freed fd was taken
        meanwhile), or the spare could not be had back: refusing cannot go on."""
        cdef bytes frame = refusal_frame(err, self.accept_backoff)
        cdef int fd, i, most = ACCEPT_BATCH
        cdef bint going = True
        close(self.spare_fd)
        for i in range(most):
            fd = accept4(self.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                # EAGAIN: drained; anything else: another thread took the freed fd.
                going = errno == EAGAIN
                break
            # A client already gone just misses the frame.
            send(fd, <const char*>frame, len(frame), MSG_NOSIGNAL | MSG_DONTWAIT)
            close(fd)
            self.refused += 1
        self.spare_fd = _open_spare()
        return going and self.spare_fd >= 0

    cdef int _resume(self) except -1:
        self.paused = False
        self._ctl(EPOLL_CTL_ADD, self.listen_fd, EPOLLIN, KIND_LISTENER)
        if self.spare_fd < 0:
            self.spare_fd = _open_spare()
        return 0

    cdef int _accept_wait(self, int ms) except? -2:
        """``ms``, shortened so accepting resumes on time; resumes it if that is due."""
        cdef int left = <int>((self.resume_at - _now()) * 1000.0 + 0.999)
        if left <= 0:
            self._resume()
            return ms
        return left if ms < 0 or left < ms else ms

    cdef int _close(self, Connection conn) except -1:
        if conn.closed:
            return 0
        conn.closed = True
        # Out of epoll before close: the fd number may be reused at once.
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, conn.fd, NULL)
        close(conn.fd)
        self.by_fd[conn.fd] = NULL
        del self.conns[conn.fd]
        conn.out_start = conn.out_end = 0
        if self.paused:
            self._resume()  # Its fd is free for the next client.
        self.woke = True
        self.on_close(conn)
        return 0

    cdef int _serve_backlog(self) except -1:
        """Serve connections whose frames waited for this round, oldest first."""
        cdef list waiting = self.backlog
        cdef Connection conn
        cdef Py_ssize_t i
        self.backlog = []
        for i in range(len(waiting)):
            if self.budget <= 0:
                # Not reached this round: they stay ahead of those served just now.
                self.backlog[:0] = waiting[i:]
                return 0
            conn = <Connection>waiting[i]
            conn.backlogged = False
            if not conn.closed:
                conn._serve_input()
        return 0

    cdef list _take_ready(self):
        """Up to ``batch`` of asyncio's ready fds, oldest first; the rest wait for the next round."""
        cdef list ready = []
        cdef dict pending = self.ready_fds
        cdef uint32_t ev
        cdef int mask
        while pending and len(ready) < self.batch:
            fd = next(iter(pending))
            ev = pending.pop(fd)
            key = self.keys.get(fd)
            if key is None:
                continue  # Unregistered while it waited.
            mask = 0
            if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                mask |= EVENT_READ
            if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                mask |= EVENT_WRITE
            mask &= key.events
            if mask:
                ready.append((key, mask))
        return ready

    cdef int _flush_dirty(self) except -1:
        cdef Connection conn
        while self.dirty:
            batch, self.dirty = self.dirty, []
            for conn in batch:
                conn.dirty = False
                if not conn.closed:
                    conn._flush()
        return 0

    # -- selector API (what asyncio calls) --------------------------------------

    def register(self, fileobj, events, data=None):
        fd = fileobj_to_fd(fileobj)
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if fd in self.keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._ctl(EPOLL_CTL_ADD, fd, to_epoll(events), KIND_PY)
        self.keys[fd] = key
        return key

    def unregister(self, fileobj):
        fd = fileobj_to_fd(fileobj)
        try:
            key = self.keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self.ready_fds.pop(fd, None)  # Its fd number may come back as someone else's.
        # Fails harmlessly if the owner already closed the fd (epoll dropped it then).
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
        return key

    def modify(self, fileobj, events, data=None):
        fd = fileobj_to_fd(fileobj)
        try:
            key = self.keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self._ctl(EPOLL_CTL_MOD, fd, to_epoll(events), KIND_PY)
        key = key._replace(events=events, data=data)
        self.keys[fd] = key
        return key

    def get_key(self, fileobj):
        return self.get_map()[fileobj]

    def get_map(self):
        return KeyMap(self.keys)

    cdef int _handle(self, int n) except -1:
        """Serve the clients among the first ``n`` events; asyncio's fds join ``ready_fds``."""
        cdef int i, kind, fd
        cdef uint32_t ev
        cdef Connection conn
        cdef dict ready_fds = self.ready_fds
        for i in range(n):
            ev = self.events[i].events
            kind = <int>(self.events[i].data.u64 >> 32)
            fd = <int><uint32_t>self.events[i].data.u64
            if kind == KIND_CONN:
                if fd >= self.by_fd_cap or self.by_fd[fd] == NULL:
                    continue
                conn = <Connection>self.by_fd[fd]
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    conn._on_readable()
                if not conn.closed and ev & EPOLLOUT:
                    conn._flush()
            elif kind == KIND_PY:
                if fd in self.keys:
                    # Still ready if it waited: epoll reports it again, merged with its turn.
                    ready_fds[fd] = ready_fds.get(fd, 0) | ev
            elif kind == KIND_LISTENER and fd == self.listen_fd:
                self._accept()
            elif kind == KIND_TIMER:
                self.timer_fired = True
        return 0

    def serve_clients(self, double min_gap=0.0):
        """Serve clients now, between two of the loop's callbacks (see the Python twin)."""
        cdef int n
        cdef double now = _now()
        if now - self.served_at < min_gap:
            return False
        self.served_at = now
        n = epoll_wait(self.epfd, self.events, MAX_EVENTS, 0)
        if n < 0:
            if errno != EINTR:
                raise OSError(errno, "epoll_wait failed")
            n = 0
        # A connection read is flushed as it is served; the others' replies wait for select().
        self._handle(n)
        self.woke = False
        return True

    cdef int _arm_timer(self, double deadline) except -1:
        """Make the timerfd fire at ``deadline`` or less than 1 ms after it.

        asyncio passes a timeout from its own reading of the clock, so one deadline arrives
        a few microseconds apart from call to call: an armed time in that window is kept.
        """
        cdef itimerspec spec
        cdef double at
        if deadline <= self.timer_at <= deadline + 0.001:
            return 0
        at = deadline + 0.0005
        spec.it_interval.tv_sec = 0
        spec.it_interval.tv_nsec = 0
        spec.it_value.tv_sec = <long>at
        spec.it_value.tv_nsec = <long>((at - <long>at) * 1e9)
        if timerfd_settime(self.timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0:
            raise OSError(errno, "timerfd_settime failed")
        self.timer_at = at
        return 0

    def select(self, timeout=None):
        cdef int n, ms, wait_ms
        cdef double deadline = 0
        cdef list ready
        cdef dict ready_fds = self.ready_fds
        self.rounds += 1
        self._flush_dirty()
        if self.woke:
            # That flush called back into the loop (a drain, a close): its callbacks are due
            # now, and the loop computed its timeout before they existed. Waiting here would
            # sleep through them (a stream stalled for good on a drained connection).
            self.woke = False
            return []
        self.budget = self.batch
        if self.backlog:
            self._serve_backlog()
        if self.woke or self.backlog or ready_fds:
            # Frames just handed over, or work left over from earlier rounds, are due now.
            ms = 0
        elif timeout is None:
            ms = -1
        else:
            # Round up, as selectors.EpollSelector does, so a short wait never spins.
            ms = <int>(max(0.0, timeout) * 1000.0 + 0.999)
            deadline = _now() + max(0.0, timeout)
        while True:
            if self.paused:
                wait_ms = self._accept_wait(ms)
            elif ms > 0:
                # epoll_wait with a timeout arms and cancels a kernel timer each time it sleeps
                # (~0.6 us of CPU per NOOP round trip on a VM); the timerfd is re-armed only
                # when the loop's deadline moves, and epoll_wait sleeps without a timeout.
                self._arm_timer(deadline)
                wait_ms = -1
            else:
                wait_ms = ms
            # Asked before each wait: a callback of the last round may have woken a worker.
            if _gil_unwanted():
                # Nobody else could want the GIL: skip the release/re-take (~400 instructions).
                self.waits_holding_gil += 1
                n = epoll_wait(self.epfd, self.events, MAX_EVENTS, wait_ms)
            else:
                with nogil:
                    n = epoll_wait(self.epfd, self.events, MAX_EVENTS, wait_ms)
            if n < 0:
                if errno != EINTR:
                    raise OSError(errno, "epoll_wait failed")
                PyErr_CheckSignals()
                n = 0
            self._handle(n)
            ready = self._take_ready() if ready_fds else None
            self._flush_dirty()
            if not (ready or self.woke or ms == 0):
                if ms < 0 or (wait_ms < 0 and not self.timer_fired):
                    continue  # No deadline, or the timer set for it has not fired yet.
                self.timer_fired = False
                ms = <int>((deadline - _now()) * 1000.0 + 0.999)
                if ms > 0:
                    continue
            self.woke = False
            self.served_at = _now()
            # A list only to return: NOOPs loop here without one (~0.07 us a round trip).
            return ready if ready is not None else []

    def close(self):
        for conn in list(self.conns.values()):
            self._close(conn)
        self.stop_listening()
        self.keys.clear()
        if self.timer_fd >= 0:
            close(self.timer_fd)
            self.timer_fd = -1
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
