"""Descriptors the kernel keeps per agent but seldom uses, parked outside its descriptor table.

The kernel's open-file limit bounds its descriptor table, and with 10,000 agents that table
must hold their connections and the clients'. Each agent also needs its pidfd (to learn that
it ended) and the read end of its output pipe (for the agent's writes not to fail), which are
idle almost always. They are parked in the holder: a thread of the kernel with a descriptor
table of its own (``_fast/includes/fd_holder.h``), which watches them and says when one is
ready: the agent ended, or wrote. Only then does the kernel act, on a copy it is given (a
pipe's, for reading) or by pid (a child the kernel has not reaped keeps its pid). An owner
re-arms the watch (``arm``) when it is idle again, and drops the descriptor when done.

A holder thread's table has the kernel's limit too: when those running are full another one
starts (``MAX_THREADS`` at most). All of it runs on the event loop. Where no holder can start,
``hold`` answers None and the owner keeps its descriptor in the kernel's table, as before the
holder existed.
"""
from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import resource
import socket
import struct
import time
from collections import deque
from collections.abc import Callable

from ..kernel.slices import SLICE
from ..sandbox._linux import linux

log = logging.getLogger("agentos.processes")

_MSG = struct.Struct("IIII")
#: Ready: called with (a copy of the descriptor, or -1, and the epoll events that happened).
Ready = Callable[[int, int], None]
#: Refused: the holder could not keep it (its errno); called with the descriptor given back, or -1.
Refused = Callable[[int, int], None]
_HELLO_TIMEOUT = 10.0
#: Holder threads at most: each holds up to the open-file limit (20,000 here: 10,000 agents).
MAX_THREADS = 8


class Parked:
    """One descriptor in a holder: its thread, its slot (its number in that thread's table) and owner."""

    __slots__ = ("thread", "slot", "events", "give_back", "on_ready", "on_refused", "dropped")

    def __init__(self, thread: _Thread, slot: int, events: int, give_back: bool, on_ready: Ready,
                 on_refused: Refused) -> None:
        self.thread = thread
        self.slot = slot
        self.events = events
        self.give_back = give_back
        self.on_ready = on_ready
        self.on_refused = on_refused
        self.dropped = False


class FdHolder:
    """The kernel's side of its holder threads."""

    def __init__(self, capacity: int | None = None) -> None:
        """``capacity``: descriptors per thread (default: as many as its table can take)."""
        self.capacity = capacity
        self._threads: list[_Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Why no (further) holder thread starts; None while they can.
        self.reason: str | None = "not started"

    @property
    def available(self) -> bool:
        return bool(self._threads)

    def __len__(self) -> int:
        """Descriptors in the holders' tables now (dropped ones until they confirm)."""
        return sum(len(thread) for thread in self._threads)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the first holder thread; without it owners keep their descriptors."""
        self._loop = loop
        self._add()

    def close(self) -> None:
        """Stop the holders: each closes everything still parked in it."""
        for thread in self._threads:
            thread.close()
        self._threads.clear()
        self.reason = "stopped"

    def hold(self, fd: int, events: int, on_ready: Ready, on_refused: Refused, *,
             give_back: bool = False) -> Parked | None:
        """Park ``fd`` (taken: closed here once sent) and wait for ``events`` on it, one-shot
        (``give_back``: with a copy of it for ``on_ready``). None, with ``fd`` left open, if no
        holder runs or all are full."""
        for thread in self._threads:
            parked = thread.hold(fd, events, on_ready, on_refused, give_back)
            if parked is not None:
                return parked
        if self.reason is not None or len(self._threads) >= MAX_THREADS or not self._add():
            return None
        return self._threads[-1].hold(fd, events, on_ready, on_refused, give_back)

    @staticmethod
    def arm(parked: Parked) -> None:
        """Watch it again (after it was ready): the holder answers at once if it already is."""
        parked.thread.arm(parked)

    @staticmethod
    def drop(parked: Parked) -> None:
        """Close it in its holder; its owner hears nothing more of it."""
        parked.thread.drop(parked)

    def _add(self) -> bool:
        assert self._loop is not None
        thread = _Thread(self._lost, self.capacity)
        if not thread.start(self._loop):
            self.reason = thread.reason
            log.warning("%s; agents' pidfds and output pipes stay in the kernel's table", self.reason)
            return False
        self._threads.append(thread)
        self.reason = None
        return True

    def _lost(self, thread: _Thread) -> None:
        self._threads.remove(thread)
        self.reason = "a descriptor holder thread ended"


class _Thread:
    """The kernel's side of one holder thread."""

    def __init__(self, lost: Callable[[_Thread], None], capacity: int | None) -> None:
        self._on_lost = lost
        self._capacity = capacity
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Slots held (or whose DROP is not yet confirmed), and those free to give again.
        self._slots: dict[int, Parked] = {}
        self._free: list[int] = []
        self._next = linux.HOLDER_FIRST_SLOT
        self._limit = 0
        #: Messages a full socket did not take yet, in order (each with the fd it carries, or -1).
        self._outbox: deque[tuple[bytes, int]] = deque()
        self.reason: str | None = "not started"

    def __len__(self) -> int:
        return len(self._slots)

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start the holder thread (about a millisecond); False (and ``reason``) if it cannot."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            linux.start_fd_holder(theirs.fileno())
            ours.settimeout(_HELLO_TIMEOUT)
            hello = ours.recv(_MSG.size)
        except OSError as exc:
            ours.close()
            self.reason = f"the descriptor holder did not start: {exc}"
            return False
        finally:
            # Only now: until its HELLO the thread shared this table, and this copy with it.
            theirs.close()
        if len(hello) != _MSG.size or _MSG.unpack(hello)[0] != linux.HOLDER_HELLO:
            ours.close()
            self.reason = "the descriptor holder ended at its start"
            return False
        ours.setblocking(False)
        self._sock, self._loop, self.reason = ours, loop, None
        # The holder's table has the same limit as the kernel's; its first slots are its own.
        self._limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self._capacity is not None:
            self._limit = min(self._limit, linux.HOLDER_FIRST_SLOT + self._capacity)
        loop.add_reader(ours.fileno(), self._readable)
        return True

    def close(self) -> None:
        """Stop the holder: it closes everything still parked."""
        if self._sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        if self._outbox:
            self._loop.remove_writer(self._sock.fileno())
        for _, fd in self._outbox:
            if fd >= 0:
                os.close(fd)
        self._outbox.clear()
        self._sock.close()
        self._sock = None
        self._slots.clear()
        self.reason = "stopped"

    def hold(self, fd: int, events: int, on_ready: Ready, on_refused: Refused, give_back: bool) -> Parked | None:
        """Park ``fd`` here; None, with ``fd`` left open, if this holder is full or gone."""
        if self._sock is None:
            return None
        slot = self._free.pop() if self._free else self._next
        if slot >= self._limit:
            return None
        if slot == self._next:
            self._next += 1
        parked = Parked(self, slot, events, give_back, on_ready, on_refused)
        self._slots[slot] = parked
        self._send(linux.HOLDER_HOLD, parked, fd)
        return parked

    def arm(self, parked: Parked) -> None:
        if not parked.dropped and self._sock is not None:
            self._send(linux.HOLDER_ARM, parked)

    def drop(self, parked: Parked) -> None:
        if parked.dropped:
            return
        parked.dropped = True
        if self._sock is not None:
            self._send(linux.HOLDER_DROP, parked)

    def _send(self, op: int, parked: Parked, fd: int = -1) -> None:
        message = _MSG.pack(op, parked.slot, parked.events, linux.HOLDER_GIVE_BACK if parked.give_back else 0)
        if not self._outbox and self._try_send(message, fd):
            return
        if not self._outbox:
            assert self._loop is not None and self._sock is not None
            self._loop.add_writer(self._sock.fileno(), self._flush)
        self._outbox.append((message, fd))

    def _try_send(self, message: bytes, fd: int) -> bool:
        assert self._sock is not None
        try:
            if fd >= 0:
                socket.send_fds(self._sock, [message], [fd])
                os.close(fd)
            else:
                self._sock.send(message)
        except BlockingIOError:
            return False
        return True

    def _flush(self) -> None:
        while self._outbox:
            message, fd = self._outbox[0]
            if not self._try_send(message, fd):
                return
            self._outbox.popleft()
        assert self._loop is not None and self._sock is not None
        self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        assert self._sock is not None
        # A slice of the loop's time: a storm of ends (each reaped and finished by its owner,
        # 0.1 ms or more) must not hold the loop in one go; the rest waits for the next turn.
        due = time.perf_counter() + SLICE
        while time.perf_counter() < due:
            fds = array.array("i")
            try:
                message, ancillary, flags, _ = self._sock.recvmsg(
                    _MSG.size, socket.CMSG_LEN(fds.itemsize), socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            if not message:
                self._lost()
                return
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            op, slot, events, _ = _MSG.unpack(message)
            self._dispatch(op, slot, events, fds[0] if fds else -1, bool(flags & socket.MSG_CTRUNC))

    def _dispatch(self, op: int, slot: int, events: int, fd: int, truncated: bool) -> None:
        parked = self._slots.get(slot)
        if op == linux.HOLDER_DROPPED:
            if parked is not None and parked.dropped:
                del self._slots[slot]
                self._free.append(slot)
            return
        if parked is None or parked.dropped:
            if fd >= 0:
                os.close(fd)  # news of a descriptor its owner dropped meanwhile
            return
        if op == linux.HOLDER_READY:
            if parked.give_back and fd < 0:
                # No room in the kernel's table for the copy (``truncated``): ask again soon.
                log.warning("descriptor holder: no free fd for slot %d (%s); retrying", slot,
                            "truncated" if truncated else "none sent")
                assert self._loop is not None
                self._loop.call_later(0.1, self.arm, parked)
                return
            parked.on_ready(fd, events)
        elif op == linux.HOLDER_REFUSED:
            parked.dropped = True
            del self._slots[slot]
            self._free.append(slot)
            parked.on_refused(fd, events)

    def _lost(self) -> None:
        """The holder thread ended without being asked: what it held is closed. Never expected
        (it ends only at end of file); owners are told, as refusals, so they can do without."""
        log.error("the descriptor holder thread ended; agents' pidfds and output pipes it held are lost")
        assert self._sock is not None and self._loop is not None
        parked = [p for p in self._slots.values() if not p.dropped]
        self.close()
        self._on_lost(self)
        for p in parked:
            p.dropped = True
            p.on_refused(-1, errno.EPIPE)
