"""Clients are served while the loop is busy: short iterations, and checkpoints inside long ones.

The reactor serves clients only when the loop calls into it, so each test counts what
happens between those calls (frames handed over, fds returned, callbacks run), never time.
"""
from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentos.kernel import reactor as reactor_py
from agentos.kernel.loop import ReactorLoop
from agentos.protocol import FrameDecoder, encode_frame

from .twins import REACTOR_TWINS as TWINS

THINKISH = 0x05


class Served:
    """A reactor with one adopted client connection, recording every frame handed over."""

    def __init__(self, twin: str, **options: Any) -> None:
        self.frames: list[int] = []
        self.reactor = TWINS[twin].Reactor(self._on_frame, lambda conn: None, lambda conn: None,
                                           **options)
        kernel_end, self.client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn = self.reactor.adopt(kernel_end)
        self.decoder = FrameDecoder()

    def _on_frame(self, conn: Any, opcode: int, flags: int, request_id: int, payload: bytes) -> None:
        self.frames.append(request_id)

    def replies(self) -> list[int]:
        """Request ids of the replies the client can read now (without waiting)."""
        ids: list[int] = []
        while select.select([self.client], [], [], 0)[0]:
            data = self.client.recv(1 << 16)
            if not data:
                break
            ids.extend(frame.request_id for frame in self.decoder.feed(data))
        return ids

    def close(self) -> None:
        self.reactor.close()
        self.client.close()


@pytest.fixture(params=sorted(TWINS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(request.param, batch=2)
    try:
        yield s
    finally:
        s.close()


def _select_nonblocking(reactor: Any) -> list[Any]:
    """select(None) that must return at once because work is waiting: a hang fails the test."""
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(reactor.select(None)), daemon=True)
    waiter.start()
    waiter.join(60)  # bounds a broken run only; a correct select() returns at once
    assert result, "select() blocked although frames or fds were waiting for their turn"
    return result[0]


def test_select_hands_on_frame_at_most_batch_frames_in_order(served: Served) -> None:
    # Seven requests and then a NOOP, all in one write.
    served.client.sendall(b"".join(encode_frame(THINKISH, rid) for rid in range(1, 8))
                          + encode_frame(0, 8))
    per_round = []
    served.reactor.select(0)
    per_round.append(list(served.frames))
    while len(served.frames) < 7:
        before = len(served.frames)
        _select_nonblocking(served.reactor)
        per_round.append(served.frames[before:])
    assert per_round == [[1, 2], [3, 4], [5, 6], [7]]
    # The NOOP behind them keeps its place: answered in the round that reached it.
    assert served.replies() == [8]


def test_noops_ahead_of_a_waiting_frame_are_answered_at_once(served: Served) -> None:
    served.client.sendall(encode_frame(THINKISH, 1) + encode_frame(THINKISH, 2)
                          + encode_frame(0, 3) + encode_frame(THINKISH, 4) + encode_frame(0, 5))
    served.reactor.select(0)
    assert served.frames == [1, 2]
    assert served.replies() == [3]
    _select_nonblocking(served.reactor)
    assert served.frames == [1, 2, 4]
    assert served.replies() == [5]


def test_replies_wait_for_select_until_the_last_one_in_flight(served: Served) -> None:
    served.client.sendall(encode_frame(THINKISH, 1) + encode_frame(THINKISH, 2))
    served.reactor.select(0)
    assert served.frames == [1, 2]
    # Another syscall still runs: this reply waits for select(), to go out with the next.
    served.conn.send(THINKISH, 0x01, 1, b"one")
    assert served.replies() == []
    # The connection's last syscall: nothing can join the batch, so it goes out at once.
    served.conn.send(THINKISH, 0x01, 2, b"two")
    assert served.replies() == [1, 2]
    assert served.conn.inflight == 0


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_select_returns_at_most_batch_of_asyncios_fds_each_in_turn(twin: str) -> None:
    reactor = TWINS[twin].Reactor(lambda *a: None, lambda conn: None, lambda conn: None, batch=2)
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for ours, theirs in pairs:
            reactor.register(ours, reactor_py.EVENT_READ, data=ours.fileno())
            theirs.send(b"x")  # readable, and it stays so: nobody reads it
        everyone = sorted(ours.fileno() for ours, _ in pairs)
        rounds = [[key.data for key, _ in reactor.select(0)]]
        for _ in range(2):
            rounds.append([key.data for key, _ in _select_nonblocking(reactor)])
        # They stay readable, so every round is full; none comes twice before all came once.
        assert [len(r) for r in rounds] == [2, 2, 2]
        returned = [fd for r in rounds for fd in r]
        assert sorted(returned[:5]) == everyone
        # An fd unregistered while it waits for its turn is never returned.
        waiting = next(fd for fd in everyone if fd not in rounds[-1])
        reactor.unregister(next(ours for ours, _ in pairs if ours.fileno() == waiting))
        later = [key.data for _ in range(3) for key, _ in _select_nonblocking(reactor)]
        assert sorted(set(later)) == [fd for fd in everyone if fd != waiting]
    finally:
        reactor.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_serve_clients_answers_noops_and_keeps_asyncios_fds_for_select(served: Served) -> None:
    ours, theirs = socket.socketpair()
    try:
        served.reactor.register(ours, reactor_py.EVENT_READ, data="asyncio's")
        theirs.send(b"x")
        served.client.sendall(encode_frame(0, 1) + encode_frame(THINKISH, 2))
        assert served.reactor.serve_clients(0.0)
        assert served.replies() == [1]
        assert served.frames == [2]
        # Not due yet: a gap longer than any test takes.
        assert not served.reactor.serve_clients(3600.0)
        ready = _select_nonblocking(served.reactor)
        assert [key.data for key, _ in ready] == ["asyncio's"]
    finally:
        served.reactor.unregister(ours)
        ours.close()
        theirs.close()


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_a_noop_is_answered_in_the_middle_of_a_long_loop_iteration(twin: str) -> None:
    """Sixty callbacks queued at once run in one iteration; a NOOP sent by the tenth is
    answered before the twelfth runs (a checkpoint after every callback, no minimum gap).
    Without the checkpoints it would wait for the next select(), after all sixty."""
    served = Served(twin)
    loop = ReactorLoop(served.reactor, free=0, check_every=1, slice_s=0.0)
    seen_at: list[int] = []
    noop = encode_frame(0, 42)

    def step(i: int) -> None:
        if i == 10:
            served.client.sendall(noop)
        elif not seen_at and served.replies() == [42]:
            seen_at.append(i)

    def burst() -> None:
        for i in range(60):
            loop.call_soon(step, i)
        loop.call_soon(loop.stop)

    try:
        loop.call_soon(burst)
        loop.run_forever()
        assert seen_at == [11]
    finally:
        loop.close()
        served.client.close()


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_checkpoints_wait_for_the_slice(twin: str) -> None:
    """With a slice longer than the test, checkpoints never serve (the select() that started
    the iteration served clients last): the NOOP waits for the next select()."""
    served = Served(twin)
    loop = ReactorLoop(served.reactor, free=0, check_every=1, slice_s=3600.0)
    answered_during: list[list[int]] = []

    def step(i: int) -> None:
        if i == 0:
            served.client.sendall(encode_frame(0, 7))
        else:
            answered_during.append(served.replies())

    def burst() -> None:
        for i in range(20):
            loop.call_soon(step, i)
        loop.call_soon(loop.stop)

    try:
        loop.call_soon(burst)
        loop.run_forever()
        assert answered_during == [[]] * 19
        loop.run_until_complete(asyncio.sleep(0))  # once through select()
        assert served.replies() == [7]
    finally:
        loop.close()
        served.client.close()

