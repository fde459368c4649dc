"""Both reactor twins, and the stdlib's EpollSelector, held to one behaviour in one run.

Written once, run per implementation (uvloop's ``Test_UV_*``/``Test_AIO_*`` pattern):
``Test_Compiled_*`` runs ``agentos._fast.reactor``, ``Test_Python_*`` runs
``agentos.kernel.reactor`` and ``Test_Epoll_*`` runs ``selectors.EpollSelector``.

The twins come from ``twins.py``, which imports the compiled one by its own name, so it is
under test in both of CI's modes: ``AGENTOS_NO_EXTENSIONS=1`` chooses which twin the kernel
runs, not which ones exist. ``test_the_compiled_twin_is_the_extension_module`` fails if that
name ever resolves to anything but the built extension.

What EpollSelector is a reference for: the reactor is two things in one object. It is an
asyncio *selector* (``register``, ``modify``, ``unregister``, ``get_key``, ``get_map``,
``select(timeout)`` over the fds asyncio owns), and it *serves agentos clients* (``adopt``,
``listen``, frames, NOOP, backpressure). For the first, EpollSelector is the stdlib's
implementation of the same contract on the same epoll, the one ``asyncio.SelectorEventLoop``
is written against: ``_SelectorTests`` run on all three, so the twins are held to what asyncio
expects, not merely to each other. The second has no stdlib counterpart, and a client server
written to compare against would be a third twin to keep honest; ``_ServingTests`` run on both
twins and assert the wire behaviour that docs/protocol.md promises.

One difference is by design: a reactor's ``select()`` returns at most ``batch`` ready fds per
call and keeps the rest, in order, for the next (the kernel's short loop iterations), where
EpollSelector returns them all at once. An fd that stays ready is reported again by all three,
so the tests collect readiness over as many ``select(0)`` calls as the slowest of them needs.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ujson

from agentos._reactor_common import ACCEPT_BATCH
from agentos.kernel.loop import ReactorLoop
from agentos.protocol import codec as codec_py
from agentos.protocol.constants import HEADER, MAGIC, VERSION, ErrorCode, Flag

from .twins import REACTOR_TWINS

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
#: An opcode the reactors hand to ``on_frame`` (anything but NOOP, opcode 0).
OP = 0x05
REPLY = int(Flag.REPLY)
STREAM_CHUNK = int(Flag.REPLY | Flag.STREAM)
#: Bounds a broken run only: every wait below ends as soon as what it awaits happens.
PATIENCE = 30.0


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: TCP is how one end resets the other (RST)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return accepted, client


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a reset, not an end of file."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def reported(selector: Any, calls: int | None = None) -> dict[int, int]:
    """fd -> events reported over ``calls`` select(0) calls (default: one per registered fd,
    enough for any batch); no call may report an fd twice."""
    seen: dict[int, int] = {}
    for _ in range(len(selector.get_map()) + 1 if calls is None else calls):
        fds = []
        for key, events in selector.select(0):
            fds.append(key.fd)
            assert events and not events & ~key.events, f"fd {key.fd}: {events} not asked for"
            seen[key.fd] = seen.get(key.fd, 0) | events
        assert len(fds) == len(set(fds)), f"one select() reported an fd twice: {fds}"
    return seen


def wait_until(selector: Any, done: Callable[[], bool], what: str) -> None:
    """select() until ``done()``: one thread plays the loop, the test plays its callbacks."""
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        selector.select(0.01)


class Peer:
    """The client end of a served connection: bytes out, decoded frames in (never blocks)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(PATIENCE)
        self.decoder = codec_py.FrameDecoder()
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> list[tuple[int, int, int, bytes]]:
        """Take what the reactor has sent so far: ``(opcode, flags, request id, payload)``."""
        while not self.eof:
            try:
                # A socket with a timeout is non-blocking underneath: os.read never waits.
                data = os.read(self.sock.fileno(), 1 << 20)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
            self.frames += [(f.opcode, f.flags, f.request_id, bytes(f.payload))
                            for f in self.decoder.feed(data)]
        return self.frames

    def ended(self) -> bool:
        """True once the reactor closed its end and everything it sent has been read."""
        self.read()
        return self.eof

    def close(self) -> None:
        self.sock.close()


class _Resources:
    """What every test here shares: the selector under test, closing all it opened, no fd leaked.

    The callbacks a reactor twin is built with record into ``frames``, ``closed`` and
    ``drained``; the selector tests never trigger them.
    """

    #: A new selector of the implementation under test (its class's mixin says how).
    new_selector: Callable[..., Any]
    #: A new asyncio loop running on ``selector``.
    new_loop: Callable[[Any], asyncio.AbstractEventLoop]

    @pytest.fixture(autouse=True)
    def _no_leaks(self) -> Iterator[None]:
        #: ``(connection, opcode, flags, request id, payload)`` of each frame handed over.
        self.frames: list[tuple[Any, int, int, int, bytes]] = []
        self.closed: list[Any] = []
        #: ``write_buffered`` of each connection ``on_drain`` was called for, at the call.
        self.drained: list[int] = []
        self.closing: list[Any] = []
        before = open_fds()
        yield
        for thing in reversed(self.closing):
            thing.close()
        assert open_fds() == before, "the test leaked fds"

    def on_frame(self, conn: Any, opcode: int, flags: int, request_id: int, payload: bytes) -> None:
        self.frames.append((conn, opcode, flags, request_id, payload))

    def on_drain(self, conn: Any) -> None:
        self.drained.append(conn.write_buffered)

    def selector(self, **options: Any) -> Any:
        selector = self.new_selector(**options)
        self.closing.append(selector)
        return selector

    def pair(self) -> tuple[socket.socket, socket.socket]:
        ours, theirs = pair()
        self.closing += [ours, theirs]
        return ours, theirs

    def raise_fd_limit(self) -> None:
        """Room for 1,000 socketpairs (2,000 fds, over a default soft limit of 1,024) for this test."""
        self.closing.append(_Rlimit(resource.getrlimit(resource.RLIMIT_NOFILE)))
        REACTOR_TWINS["python"].raise_fd_limit()


class _Rlimit:
    """Puts RLIMIT_NOFILE back when the test's resources close."""

    def __init__(self, limits: tuple[int, int]) -> None:
        self.limits = limits

    def close(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)


class _SelectorTests(_Resources):
    """The selector contract asyncio relies on; run on both twins and on EpollSelector."""

    # -- registration ------------------------------------------------------------------

    def test_register_returns_the_key_and_the_map_finds_it(self) -> None:
        sel = self.selector()
        ours, theirs = self.pair()
        key = sel.register(ours, READ, "data")
        assert (key.fileobj, key.fd, key.events, key.data) == (ours, ours.fileno(), READ, "data")
        assert sel.get_key(ours) == key
        assert sel.get_key(ours.fileno()) == key
        assert sel.get_map()[ours] == key
        assert len(sel.get_map()) == 1 and list(sel.get_map()) == [ours.fileno()]
        assert reported(sel) == {}
        theirs.send(b"x")
        assert reported(sel) == {ours.fileno(): READ}

    def test_an_fd_registers_once_with_events_and_a_valid_file(self) -> None:
        sel = self.selector()
        ours, _ = self.pair()
        sel.register(ours, READ)
        with pytest.raises(KeyError):
            sel.register(ours, WRITE)
        with pytest.raises(KeyError):
            sel.register(ours.fileno(), READ)  # the same fd, by number
        other, _ = self.pair()
        for events in (0, 4, READ | 4):
            with pytest.raises(ValueError):
                sel.register(other, events)
        with pytest.raises(ValueError):
            sel.register(-1, READ)
        with pytest.raises(ValueError):
            sel.register(object(), READ)
        assert list(sel.get_map()) == [ours.fileno()]
        with pytest.raises(KeyError):
            sel.get_key(other)

    def test_a_bad_fd_is_refused_and_leaves_no_key(self, tmp_path: Path) -> None:
        sel = self.selector()
        gone = os.open(os.devnull, os.O_RDONLY)
        os.close(gone)
        with pytest.raises(OSError) as raised:
            sel.register(gone, READ)
        assert raised.value.errno == errno.EBADF  # nothing is open at that number
        regular = (tmp_path / "file").open("w")
        self.closing.append(regular)
        with pytest.raises(PermissionError):
            sel.register(regular, READ)  # epoll cannot watch a regular file
        assert len(sel.get_map()) == 0
        # The selector still works after both refusals.
        ours, theirs = self.pair()
        sel.register(ours, READ)
        theirs.send(b"x")
        assert reported(sel) == {ours.fileno(): READ}

    # -- modify and unregister ------------------------------------------------------------

    def test_modify_changes_the_events_watched_and_the_data(self) -> None:
        sel = self.selector()
        ours, theirs = self.pair()
        sel.register(ours, READ, "reading")
        theirs.send(b"x")
        key = sel.modify(ours, WRITE, "writing")
        assert (key.events, key.data) == (WRITE, "writing") and sel.get_key(ours) == key
        assert reported(sel) == {ours.fileno(): WRITE}
        sel.modify(ours, READ | WRITE)
        assert reported(sel) == {ours.fileno(): READ | WRITE}
        key = sel.modify(ours, READ | WRITE, "same events, new data")
        assert sel.get_key(ours).data == "same events, new data"
        ours.recv(1)
        assert reported(sel) == {ours.fileno(): WRITE}
        unknown, _ = self.pair()
        with pytest.raises(KeyError):
            sel.modify(unknown, READ)

    def test_unregister_stops_reports_and_frees_the_fd(self) -> None:
        sel = self.selector()
        ours, theirs = self.pair()
        key = sel.register(ours, READ)
        theirs.send(b"x")
        assert sel.unregister(ours) == key
        assert len(sel.get_map()) == 0 and reported(sel) == {}
        with pytest.raises(KeyError):
            sel.unregister(ours)
        with pytest.raises(KeyError):
            sel.get_key(ours)
        # Registered again, it is reported again.
        sel.register(ours, READ)
        assert reported(sel) == {ours.fileno(): READ}

    def test_an_fd_closed_while_registered_is_dropped_and_its_number_reusable(self) -> None:
        sel = self.selector()
        ours, theirs = pair()
        fd = ours.fileno()
        sel.register(fd, READ)
        theirs.close()
        ours.close()  # without unregistering first: epoll drops a closed fd by itself
        assert reported(sel) == {}
        sel.unregister(fd)  # quiet: the owner closed it, epoll forgot it
        assert len(sel.get_map()) == 0
        reused, writer = self.pair()
        assert reused.fileno() == fd  # the lowest free number comes back at once
        sel.register(reused, READ)
        writer.send(b"x")
        assert reported(sel) == {fd: READ}

    # -- end of file and errors ----------------------------------------------------------

    def test_end_of_file_is_reported_readable_and_writable(self) -> None:
        sel = self.selector()
        ours, theirs = self.pair()
        sel.register(ours, READ)
        theirs.shutdown(socket.SHUT_WR)
        assert reported(sel) == {ours.fileno(): READ}
        assert ours.recv(1) == b""
        theirs.close()
        sel.modify(ours, READ | WRITE)
        # A hung-up fd is ready for both: whoever reads or writes it learns the peer is gone.
        assert reported(sel) == {ours.fileno(): READ | WRITE}

    def test_a_peer_reset_is_reported_and_recv_raises_it(self) -> None:
        sel = self.selector()
        ours, theirs = tcp_pair()
        self.closing.append(ours)
        sel.register(ours, READ)
        reset(theirs)
        assert reported(sel) == {ours.fileno(): READ}
        with pytest.raises(ConnectionResetError):
            ours.recv(1)

    # -- timeouts -----------------------------------------------------------------------

    def test_select_waits_out_its_timeout_when_nothing_is_ready(self) -> None:
        sel = self.selector()
        ours, _ = self.pair()
        sel.register(ours, READ)
        for timeout in (0.05, 0.0011):
            start = time.monotonic()
            assert sel.select(timeout) == []
            assert time.monotonic() - start >= timeout, f"select({timeout}) returned early"
        assert sel.select(-1) == []  # a negative timeout polls, as 0 does

    def test_each_select_waits_for_its_own_deadline_not_an_earlier_calls(self) -> None:
        # The compiled twin keeps the deadline on a timer that outlives the call that set it.
        sel = self.selector()
        ours, theirs = self.pair()
        key = sel.register(ours, READ)
        theirs.send(b"x")
        assert sel.select(PATIENCE) == [(key, READ)]
        ours.recv(1)
        start = time.monotonic()
        assert sel.select(0.02) == []  # shorter than the last one: not slept until that one
        assert 0.02 <= time.monotonic() - start < PATIENCE / 2
        start = time.monotonic()
        assert sel.select(0.05) == []  # longer than the last one: not ended by that one
        assert time.monotonic() - start >= 0.05
        theirs.send(b"x")
        assert sel.select(0.03) == [(key, READ)]
        ours.recv(1)
        writer = threading.Timer(0.1, theirs.send, (b"x",))
        writer.start()
        try:  # no timeout at all: the 0.03 s deadline set just before passes unnoticed
            assert sel.select(None) == [(key, READ)]
        finally:
            writer.cancel()

    def test_select_without_timeout_waits_for_an_fd(self) -> None:
        sel = self.selector()
        ours, theirs = self.pair()
        key = sel.register(ours, READ)
        writer = threading.Timer(0.05, theirs.send, (b"x",))
        writer.start()
        try:
            assert sel.select(None) == [(key, READ)]
        finally:
            writer.cancel()

    def test_an_asyncio_loop_runs_timers_and_readers_on_it(self) -> None:
        loop = self.new_loop(self.new_selector())
        self.closing.append(loop)  # closes the selector too
        ours, theirs = self.pair()
        ours.setblocking(False)
        events: list[str] = []

        async def scenario() -> bytes:
            got: asyncio.Future[bytes] = loop.create_future()
            loop.add_reader(ours, lambda: got.set_result(ours.recv(16)))
            loop.call_later(0.03, events.append, "late")
            loop.call_later(0.01, events.append, "early")
            loop.call_soon(events.append, "soon")
            loop.call_later(0.02, theirs.send, b"ping")
            data = await got
            loop.remove_reader(ours)
            await asyncio.sleep(0.02)
            return data

        assert loop.run_until_complete(asyncio.wait_for(scenario(), PATIENCE)) == b"ping"
        assert events == ["soon", "early", "late"]

    # -- many fds -------------------------------------------------------------------------

    def test_a_thousand_ready_fds_are_each_reported_once_served(self) -> None:
        # 1,000 socketpairs are 2,000 fds: more than a default soft limit of 1,024.
        self.raise_fd_limit()
        sel = self.selector()
        pairs = [self.pair() for _ in range(1000)]
        by_fd = {ours.fileno(): ours for ours, _ in pairs}
        for ours, theirs in pairs:
            sel.register(ours, READ)
            theirs.send(b"x")
        served: list[int] = []
        deadline = time.monotonic() + PATIENCE
        while len(served) < len(pairs):
            assert time.monotonic() < deadline, f"{len(served)} of 1000 fds reported"
            for key, events in sel.select(0):
                assert events == READ
                by_fd[key.fd].recv(1)  # served: it is not ready any more
                served.append(key.fd)
        assert sorted(served) == sorted(by_fd), "an fd was reported twice or not at all"
        assert reported(sel, calls=3) == {}
        for ours, _ in pairs:
            sel.unregister(ours)
        assert len(sel.get_map()) == 0



class _ServingTests(_Resources):
    """What a reactor does beyond a selector: serving agentos clients; run on both twins."""

    def connect(self, reactor: Any, sndbuf: int = 0) -> tuple[Any, Peer]:
        """A socketpair whose kernel end ``reactor`` adopts: ``(connection, client)``."""
        kernel_end, client_end = pair()
        if sndbuf:
            kernel_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        peer = Peer(client_end)
        self.closing.append(peer)
        return reactor.adopt(kernel_end), peer

    def served(self, **options: Any) -> tuple[Any, Any, Peer]:
        """A reactor serving one client: ``(reactor, connection, client)``."""
        reactor = self.selector(**options)
        return (reactor, *self.connect(reactor))

    def request_ids(self) -> list[int]:
        return [request_id for _, _, _, request_id, _ in self.frames]

    # -- connections ----------------------------------------------------------------------

    def test_an_adopted_socket_is_a_connection_with_its_peers_credentials(self) -> None:
        reactor, conn, peer = self.served()
        assert reactor.connections == [conn]
        assert (conn.peer_pid, conn.peer_uid, conn.peer_gid) == (os.getpid(), os.getuid(),
                                                                 os.getgid())
        assert (conn.closed, conn.inflight, conn.write_buffered, conn.context) == (False, 0, 0, None)
        conn.context = "who"
        assert conn.context == "who"
        # Adopted fds are the reactor's own: asyncio's map does not see them.
        assert len(reactor.get_map()) == 0
        reactor.close()
        assert self.closed == [conn] and conn.closed and reactor.connections == []

    def test_a_listener_accepts_clients_until_it_stops(self, tmp_path: Path) -> None:
        reactor = self.selector()
        accepted: list[Any] = []
        reactor.on_accept = accepted.append
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "k.sock"))
        listener.listen()
        reactor.listen(listener)
        peer = Peer(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        self.closing.append(peer)
        peer.sock.connect(str(tmp_path / "k.sock"))
        wait_until(reactor, lambda: bool(accepted), "the client to be accepted")
        [conn] = accepted
        assert reactor.connections == [conn] and conn.peer_pid == os.getpid()
        peer.send(codec_py.encode_frame(0, 1, b"hi"))
        wait_until(reactor, lambda: bool(peer.read()), "the NOOP's answer")
        assert peer.frames == [(0, REPLY, 1, b"hi")]
        reactor.stop_listening()
        late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.closing.append(late)
        with pytest.raises(ConnectionRefusedError):
            late.connect(str(tmp_path / "k.sock"))
        assert reactor.connections == [conn], "stopping to listen dropped a connection"

    def test_noop_is_answered_inside_select_and_others_go_to_on_frame(self) -> None:
        reactor, conn, peer = self.served()
        peer.send(codec_py.encode_frame(0, 7, b"ping"))
        start = time.monotonic()
        # NOOP traffic never enters the loop: select() answers it and waits out its timeout.
        assert reactor.select(0.05) == []
        assert time.monotonic() - start >= 0.05
        assert peer.read() == [(0, REPLY, 7, b"ping")] and self.frames == []
        peer.send(codec_py.encode_frame(OP, 8, b"think"))
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        assert self.frames == [(conn, OP, 0, 8, b"think")] and conn.inflight == 1
        # The connection's only syscall answered: the reply goes out now, not at select().
        conn.send(OP, REPLY, 8, b"thought")
        assert peer.read()[1:] == [(OP, REPLY, 8, b"thought")] and conn.inflight == 0

    def test_a_stream_ends_its_request_only_at_its_end(self) -> None:
        reactor, conn, peer = self.served()
        peer.send(codec_py.encode_frame(OP, 1))
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        conn.send(OP, STREAM_CHUNK, 1, b"a")
        conn.send(OP, STREAM_CHUNK, 1, b"b")
        assert conn.inflight == 1
        conn.send(OP, STREAM_CHUNK | Flag.END, 1, b"")
        assert conn.inflight == 0
        wait_until(reactor, lambda: len(peer.read()) == 3, "the stream")
        assert [payload for *_, payload in peer.frames] == [b"a", b"b", b""]

    def test_a_handler_that_raises_is_logged_and_serving_carries_on(
            self, caplog: pytest.LogCaptureFixture) -> None:
        def on_frame(conn: Any, opcode: int, flags: int, request_id: int, payload: bytes) -> None:
            raise ValueError("a bug in the handler")

        reactor, conn, peer = self.served(on_frame=on_frame)
        peer.send(codec_py.encode_frame(OP, 1) + codec_py.encode_frame(0, 2))
        # Escaping select(), the error would end the loop that runs it, and the kernel with it.
        wait_until(reactor, lambda: bool(peer.read()), "the NOOP's answer")
        assert peer.frames == [(0, REPLY, 2, b"")] and not conn.closed
        [record] = [r for r in caplog.records if r.name == "agentos.reactor"]
        assert record.getMessage() == f"on_frame failed for opcode 0x{OP:02x}"
        assert record.exc_info is not None and record.exc_info[0] is ValueError

    # -- frames split across reads, oversize and malformed frames --------------------------------

    def test_frames_split_across_reads_are_served_once_whole(self) -> None:
        reactor, conn, peer = self.served(batch=8)
        noop = codec_py.encode_frame(0, 1, b"byte by byte")
        for i in range(len(noop)):
            peer.send(noop[i:i + 1])
            reactor.select(0)
            assert peer.read() == ([(0, REPLY, 1, b"byte by byte")] if i == len(noop) - 1 else [])
        three = b"".join(codec_py.encode_frame(OP, rid, bytes([rid]) * rid) for rid in (2, 3, 4))
        fourth = codec_py.encode_frame(OP, 5, b"split")
        peer.send(three + fourth[:20])  # the header and part of the payload
        wait_until(reactor, lambda: len(self.frames) == 3, "three whole frames")
        reactor.select(0)
        assert self.request_ids() == [2, 3, 4]
        peer.send(fourth[20:])
        wait_until(reactor, lambda: len(self.frames) == 4, "the split frame")
        assert self.frames[-1][3:] == (5, b"split")
        assert [payload for *_, payload in self.frames[:3]] == [b"\x02" * 2, b"\x03" * 3, b"\x04" * 4]

    def test_a_frame_larger_than_any_read_arrives_whole(self) -> None:
        reactor, conn, peer = self.served()
        payload = os.urandom(3 * 1024 * 1024 + 7)
        sender = threading.Thread(target=peer.send, args=(codec_py.encode_frame(OP, 9, payload),))
        sender.start()
        try:
            wait_until(reactor, lambda: bool(self.frames), "the large frame")
        finally:
            sender.join(PATIENCE)
        assert len(self.frames) == 1 and self.frames[0][3] == 9 and self.frames[0][4] == payload

    def test_an_oversize_frame_is_refused_after_the_frames_ahead_of_it(self) -> None:
        reactor, conn, peer = self.served(max_payload=1024)
        peer.send(codec_py.encode_frame(OP, 1, b"fits")
                  + HEADER.pack(MAGIC, VERSION, OP, 0, 0, 2, 2048))  # its header is enough
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        assert self.request_ids() == [1] and self.closed == [conn] and conn.closed
        assert reactor.connections == []
        wait_until(reactor, peer.ended, "the error and the end of file")
        assert peer.frames == [(0, int(Flag.REPLY | Flag.ERROR), 0, ujson.dumps({
            "code": ErrorCode.PROTOCOL_ERROR.value,
            "message": "payload length 2048 exceeds the maximum of 1024 bytes"}).encode())]
        conn.send(OP, REPLY, 1, b"too late")  # a closed connection drops it quietly

    @pytest.mark.parametrize("header, message", [
        (HEADER.pack(0x5858, VERSION, OP, 0, 0, 1, 0), "bad magic 0x5858 (expected 0x4f41, b'AO')"),
        (HEADER.pack(MAGIC, VERSION, OP, REPLY, 0, 1, 0), "request 1 has flags 0x1; requests carry none"),
        (HEADER.pack(MAGIC, VERSION, OP, 0, 3, 1, 0), "reserved header field is 0x0003, must be 0"),
    ])
    def test_a_malformed_frame_is_answered_with_a_protocol_error(self, header: bytes,
                                                                  message: str) -> None:
        reactor, conn, peer = self.served()
        peer.send(header + codec_py.encode_frame(0, 2))
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        wait_until(reactor, peer.ended, "the end of file")
        assert self.frames == [], "nothing after a bad frame is served"
        [(opcode, flags, request_id, payload)] = peer.read()
        assert (opcode, flags, request_id) == (0, int(Flag.REPLY | Flag.ERROR), 0)
        assert ujson.loads(payload) == {"code": ErrorCode.PROTOCOL_ERROR.value, "message": message}

    # -- end of file and errors ----------------------------------------------------------

    def test_end_of_file_waits_for_the_replies_in_flight(self) -> None:
        reactor, conn, peer = self.served()
        peer.send(codec_py.encode_frame(OP, 1))
        peer.sock.shutdown(socket.SHUT_WR)
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        for _ in range(3):
            reactor.select(0)
        assert not conn.closed and self.closed == [], "closed with a syscall in flight"
        conn.send(OP, REPLY, 1, b"answer")
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        assert peer.read() == [(OP, REPLY, 1, b"answer")] and peer.eof

    def test_end_of_file_behind_frames_waiting_for_their_batch(self) -> None:
        reactor, conn, peer = self.served(
            on_frame=lambda conn, op, flags, rid, payload: conn.send(op, REPLY, rid), batch=1)
        peer.send(b"".join(codec_py.encode_frame(OP, rid) for rid in (1, 2, 3))
                  + codec_py.encode_frame(0, 4) + codec_py.encode_frame(OP, 5)[:10])
        peer.sock.shutdown(socket.SHUT_WR)
        wait_until(reactor, peer.ended, "the end of file")
        # Every whole frame is served, one batch at a time; the cut-off one is dropped.
        assert [frame[2] for frame in peer.frames] == [1, 2, 3, 4] and self.closed == [conn]

    def test_end_of_file_with_nothing_in_flight_closes_at_once(self) -> None:
        reactor, conn, peer = self.served()
        peer.close()
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        assert self.closed == [conn] and reactor.connections == []

    def test_a_peer_reset_closes_the_connection(self) -> None:
        reactor = self.selector()
        kernel_end, client_end = tcp_pair()
        conn = reactor.adopt(kernel_end)
        assert (conn.peer_pid, conn.peer_uid, conn.peer_gid) == (0, -1, -1)  # no SO_PEERCRED on TCP
        client_end.sendall(codec_py.encode_frame(OP, 1))
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        reset(client_end)
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        assert self.closed == [conn] and conn.closed

    def test_a_reply_to_a_vanished_peer_closes_the_connection(self) -> None:
        reactor, conn, peer = self.served()
        peer.send(codec_py.encode_frame(OP, 1))
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        peer.close()
        conn.send(OP, REPLY, 1, b"nobody reads this")  # EPIPE: no SIGPIPE, a close
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        assert self.closed == [conn]

    def test_close_with_error_sends_the_error_then_closes(self) -> None:
        reactor, conn, peer = self.served()
        conn.close_with_error(b'{"code": "busy"}')
        wait_until(reactor, lambda: bool(self.closed), "the connection to close")
        wait_until(reactor, peer.ended, "the end of file")
        assert peer.read() == [(0, int(Flag.REPLY | Flag.ERROR), 0, b'{"code": "busy"}')]
        assert peer.eof

    # -- accepting a batch a round; out of fds: refusals, and the accept backoff -----------------

    def waiting_clients(self, tmp_path: Path, clients: int, **options: Any) -> tuple[Any, list[Any], list[Peer],
                                                                                     socket.socket]:
        """A reactor, and ``clients`` clients waiting in the backlog of a listener it has not taken
        yet: ``(reactor, accepted, clients, listener)``; ``accepted`` fills as it accepts them."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.closing.append(listener)  # before the reactor, which closes it first once it has it
        reactor = self.selector(**options)
        accepted: list[Any] = []
        reactor.on_accept = accepted.append
        listener.bind(str(tmp_path / "k.sock"))
        listener.listen(clients)
        peers = []
        for _ in range(clients):
            peers.append(Peer(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)))
            self.closing.append(peers[-1])
            peers[-1].sock.connect(str(tmp_path / "k.sock"))  # waits in the backlog
        return reactor, accepted, peers, listener

    def lower_fd_limit(self, room: int) -> _Rlimit:
        """Leave room for ``room`` more fds; the ``close()`` of what it returns (the test's
        resources call it too) puts RLIMIT_NOFILE back as it was."""
        limits = _Rlimit(resource.getrlimit(resource.RLIMIT_NOFILE))
        self.closing.append(limits)
        lowest_free = os.dup(0)  # a new fd takes the lowest free number
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + room, limits.limits[1]))
        return limits

    def assert_refused(self, peer: Peer, retry_after: float) -> None:
        """``peer`` was told ``busy`` (the kernel's fds) and closed."""
        assert peer.ended(), "not refused"
        [(opcode, flags, request_id, payload)] = peer.frames
        assert (opcode, flags, request_id) == (0, int(Flag.REPLY | Flag.ERROR), 0)
        busy = ujson.loads(payload)
        assert (busy["code"], busy["details"]["cap"]) == (ErrorCode.BUSY.value, "open_files")
        assert busy["details"]["retry_after"] == retry_after

    def late_client(self, tmp_path: Path) -> Peer:
        late = Peer(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        self.closing.append(late)
        late.sock.connect(str(tmp_path / "k.sock"))
        return late

    def test_a_connect_storm_is_accepted_a_batch_a_round_with_other_clients_served_between(
            self, tmp_path: Path) -> None:
        reactor, accepted, _, listener = self.waiting_clients(tmp_path, 2 * ACCEPT_BATCH + 5)
        _, bystander = self.connect(reactor)
        reactor.listen(listener)
        bystander.send(codec_py.encode_frame(0, 1, b"ping"))
        taken = []
        for _ in range(3):
            reactor.select(0)
            taken.append(len(accepted))
            if len(taken) == 1:
                # Served in the first round, not behind every client waiting to be accepted.
                assert bystander.read() == [(0, REPLY, 1, b"ping")]
        assert taken == [ACCEPT_BATCH, 2 * ACCEPT_BATCH, 2 * ACCEPT_BATCH + 5]

    def test_out_of_fds_a_storm_is_refused_busy_a_batch_a_round_and_accepting_never_pauses(
            self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="agentos.reactor")
        reactor, accepted, peers, listener = self.waiting_clients(tmp_path, 2 * ACCEPT_BATCH + 5,
                                                                  accept_backoff=3600)
        reactor.listen(listener)  # opens the spare fd it refuses clients on
        limits = self.lower_fd_limit(0)
        refused = []
        for _ in range(3):
            reactor.select(0)
            refused.append(sum(peer.ended() for peer in peers))
        limits.close()
        assert refused == [ACCEPT_BATCH, 2 * ACCEPT_BATCH, 2 * ACCEPT_BATCH + 5] and accepted == []
        for peer in peers:
            self.assert_refused(peer, retry_after=3600)
        # The listener stayed watched: a client that comes once an fd is free is accepted in
        # the next round, not after the backoff.
        self.late_client(tmp_path)
        reactor.select(0)
        assert len(accepted) == 1
        logged = [r.getMessage() for r in caplog.records]
        assert logged == ["cannot accept clients (EMFILE: Too many open files); refusing them with busy "
                          "until an fd is free", f"accepting clients again ({2 * ACCEPT_BATCH + 5} refused meanwhile)"]

    def without_spare(self, tmp_path: Path, backoff: float) -> tuple[Any, list[Any], list[Peer], _Rlimit, float]:
        """A listening reactor that could not open its spare fd, accepted one client, then ran out
        of fds with two more waiting, which it could not refuse: ``(reactor, accepted, clients,
        the fd limit to put back, a time before it paused accepting)``."""
        reactor, accepted, peers, listener = self.waiting_clients(tmp_path, 3, accept_backoff=backoff)
        no_room = self.lower_fd_limit(0)
        reactor.listen(listener)  # no spare fd
        no_room.close()
        limits = self.lower_fd_limit(1)  # room for the first client's fd
        before_pause = time.monotonic()
        wait_until(reactor, lambda: bool(accepted), "the first client")
        for _ in range(3):
            reactor.select(0)
        assert len(accepted) == 1 and not any(peer.ended() for peer in peers[1:]), "refused without a spare"
        return reactor, accepted, peers, limits, before_pause

    def test_out_of_fds_without_a_spare_clients_wait_and_are_accepted_after_the_backoff(
            self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        reactor, accepted, peers, limits, before_pause = self.without_spare(tmp_path, backoff=0.2)
        limits.close()
        wait_until(reactor, lambda: len(accepted) == 3, "accepting to resume")
        assert time.monotonic() - before_pause >= 0.2, "accepted again before the backoff"
        assert not any(peer.ended() for peer in peers)
        assert ("cannot accept clients (EMFILE: Too many open files); they wait, retrying every 0.2s and "
                "whenever a connection closes") in caplog.messages

    def test_out_of_fds_without_a_spare_a_closed_connection_gives_it_back_to_refuse_on(
            self, tmp_path: Path) -> None:
        reactor, accepted, peers, _, _ = self.without_spare(tmp_path, backoff=3600)
        # Closed by the reactor, not by the client, which lives in this process: its fd would free too.
        accepted[0].close()  # its fd is free: accepting resumes at once, the spare taken first
        wait_until(reactor, lambda: all(peer.ended() for peer in peers[1:]), "the refusals")
        for peer in peers[1:]:
            self.assert_refused(peer, retry_after=3600)
        assert len(accepted) == 1 and self.closed == [accepted[0]]

    # -- backpressure ---------------------------------------------------------------------

    def over_high_water(self) -> tuple[Any, Any, Peer]:
        """A reactor whose one connection has a stream reply queued over its high water (64 KiB;
        low water 16 KiB) that the client has not read: ``(reactor, connection, client)``."""
        reactor = self.selector(high_water=64 * 1024, low_water=16 * 1024)
        # A small socket buffer: the reactor's own queue, not the kernel's, holds the backlog.
        conn, peer = self.connect(reactor, sndbuf=4096)
        peer.send(codec_py.encode_frame(OP, 1))
        wait_until(reactor, lambda: bool(self.frames), "the frame")
        conn.send(OP, STREAM_CHUNK, 1, b"z" * (256 * 1024))
        reactor.select(0)
        assert conn.write_buffered > 64 * 1024
        return reactor, conn, peer

    def test_high_water_stops_reading_until_low_water(self) -> None:
        reactor, conn, peer = self.over_high_water()
        peer.send(codec_py.encode_frame(OP, 2) + codec_py.encode_frame(0, 3))
        for _ in range(5):
            reactor.select(0)
        # Over high water: not read, so neither the request nor the NOOP behind it is served.
        assert self.request_ids() == [1] and self.drained == []
        deadline = time.monotonic() + PATIENCE
        while not self.drained:
            assert time.monotonic() < deadline, "never drained"
            peer.read()
            reactor.select(0)
            assert self.drained or conn.write_buffered > 16 * 1024, "low water passed, no on_drain"
        assert self.drained[0] <= 16 * 1024, "on_drain came above low water"
        wait_until(reactor, lambda: len(self.frames) == 2, "reading to resume")
        wait_until(reactor, lambda: (0, REPLY, 3, b"") in peer.read(), "the NOOP's answer")
        assert self.request_ids() == [1, 2] and len(self.drained) == 1

    def test_an_on_drain_that_closes_the_connection(self) -> None:
        reactor, conn, peer = self.over_high_water()
        reactor.on_drain = lambda conn: conn.close()

        def closed() -> bool:
            peer.read()  # the client reads: the queue drains
            return bool(self.closed)

        wait_until(reactor, closed, "the close")
        assert self.closed == [conn] and reactor.connections == []

    def test_max_inflight_stops_reading_until_a_reply(self) -> None:
        reactor, conn, peer = self.served(max_inflight=2, batch=8)
        peer.send(codec_py.encode_frame(OP, 1) + codec_py.encode_frame(OP, 2))
        wait_until(reactor, lambda: len(self.frames) == 2, "two frames")
        peer.send(codec_py.encode_frame(OP, 3))
        for _ in range(5):
            reactor.select(0)
        assert self.request_ids() == [1, 2] and conn.inflight == 2
        conn.send(OP, REPLY, 1, b"")
        wait_until(reactor, lambda: len(self.frames) == 3, "reading to resume")
        assert self.request_ids() == [1, 2, 3] and conn.inflight == 2

    # -- timers and the loop --------------------------------------------------------------

    def test_loop_timers_fire_while_noops_stream_in(self) -> None:
        reactor, _, peer = self.served()
        loop = self.new_loop(reactor)
        self.closing.append(loop)  # closes the reactor first (closing it twice is harmless)
        stop = threading.Event()

        def noops() -> None:
            rid = 0
            while not stop.is_set():
                rid += 1
                peer.send(codec_py.encode_frame(0, rid))
                time.sleep(0.001)

        sender = threading.Thread(target=noops)
        sender.start()
        try:
            start = loop.time()
            loop.run_until_complete(asyncio.sleep(0.1))
            assert loop.time() - start >= 0.1
        finally:
            stop.set()
            sender.join(PATIENCE)
        wait_until(reactor, lambda: len(peer.read()) > 10, "NOOP answers")
        assert all(frame[:2] == (0, REPLY) for frame in peer.frames)

    def test_a_frame_answered_by_a_task_after_a_timer(self) -> None:
        async def answer(conn: Any, rid: int, payload: bytes) -> None:
            await asyncio.sleep(0.01)
            conn.send(OP, REPLY, rid, payload.upper())

        def on_frame(conn: Any, opcode: int, flags: int, rid: int, payload: bytes) -> None:
            # What the kernel does: a task per syscall, on the loop running the reactor.
            asyncio.get_running_loop().create_task(answer(conn, rid, payload))

        reactor, _, peer = self.served(on_frame=on_frame)
        loop = self.new_loop(reactor)
        self.closing.append(loop)
        peer.send(codec_py.encode_frame(OP, 1, b"one") + codec_py.encode_frame(OP, 2, b"two"))

        async def replies() -> None:
            while len(peer.read()) < 2:
                await asyncio.sleep(0.005)

        loop.run_until_complete(asyncio.wait_for(replies(), PATIENCE))
        assert sorted(peer.frames) == [(OP, REPLY, 1, b"ONE"), (OP, REPLY, 2, b"TWO")]

    # -- many connections -------------------------------------------------------------------

    def test_a_thousand_connections_are_served_and_closed(self) -> None:
        self.raise_fd_limit()
        # An echo server; a batch of 64 frames per select() keeps the rounds few.
        reactor = self.selector(
            on_frame=lambda conn, op, flags, rid, payload: conn.send(op, REPLY, rid, payload), batch=64)
        peers = []
        for i in range(1000):
            peers.append(self.connect(reactor)[1])
            peers[-1].send(codec_py.encode_frame(0, i) + codec_py.encode_frame(OP, i, b"%d" % i))
        waiting = list(peers)

        def answered() -> bool:
            waiting[:] = [p for p in waiting if len(p.read()) < 2]
            return not waiting

        wait_until(reactor, answered, "2,000 answers")
        for i, p in enumerate(peers):
            assert sorted(p.frames) == [(0, REPLY, i, b""), (OP, REPLY, i, b"%d" % i)]
        for p in peers:
            p.close()
        wait_until(reactor, lambda: len(self.closed) == 1000, "1,000 closes")
        assert reactor.connections == []


class _Twin(_Resources):
    """A reactor twin under test: ``module`` is where its ``Reactor`` comes from."""

    module: Any

    def new_selector(self, on_frame: Callable[..., None] | None = None, **options: Any) -> Any:
        return self.module.Reactor(on_frame or self.on_frame, self.closed.append, self.on_drain,
                                   **options)

    def new_loop(self, selector: Any) -> asyncio.AbstractEventLoop:
        return ReactorLoop(selector)


class _Compiled(_Twin):
    module = REACTOR_TWINS["compiled"]


class _Python(_Twin):
    module = REACTOR_TWINS["python"]


class _Epoll(_Resources):
    """The reference for the selector contract (see the module docstring)."""

    def new_selector(self) -> Any:
        return selectors.EpollSelector()

    def new_loop(self, selector: Any) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(selector)


class Test_Compiled_Selector(_Compiled, _SelectorTests):
    pass


class Test_Python_Selector(_Python, _SelectorTests):
    pass


class Test_Epoll_Selector(_Epoll, _SelectorTests):
    pass


class Test_Compiled_Serving(_Compiled, _ServingTests):
    pass


class Test_Python_Serving(_Python, _ServingTests):
    pass


def test_the_compiled_twin_is_the_extension_module() -> None:
    # Whatever AGENTOS_NO_EXTENSIONS says: the switch picks the kernel's twin, not this test's.
    compiled = REACTOR_TWINS["compiled"]
    assert compiled.__file__ is not None and compiled.__file__.endswith(".so")
    assert compiled.Reactor.__module__ == "agentos._fast.reactor"
