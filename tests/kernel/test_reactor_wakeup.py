"""A drain (or close) that happens while select() starts must not be slept through.

select() first flushes the replies handlers queued; that flush can drain a throttled
connection and call on_drain, whose waiter's task is then due at once. The loop had
computed its timeout (None: block) before that callback existed, so select() must
return instead of waiting in epoll: a streaming handler stalled for good otherwise
(seen as an intermittent hang of test_slow_stream_reader_is_backpressured).
"""
from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from .twins import REACTOR_TWINS as TWINS


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_select_returns_when_its_first_flush_drains_a_connection(twin: str) -> None:
    drained: list[Any] = []
    reactor = TWINS[twin].Reactor(lambda *a: None, lambda conn: None, drained.append,
                                  high_water=64 * 1024, low_water=16 * 1024)
    kernel_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Room for the whole reply: the first flush sends all of it, draining the connection.
    kernel_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    try:
        conn = reactor.adopt(kernel_end)
        conn.send(0x01, 0x05, 1, b"x" * (100 * 1024))  # over high water: throttled
        assert conn.write_buffered > 64 * 1024
        returned = threading.Event()

        def wait() -> None:
            reactor.select(None)  # nothing else will ever happen on this reactor
            returned.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(60)  # bounds a broken run only; a correct select() returns at once
        assert drained == [conn], "the first flush should have drained the connection"
        assert returned.is_set(), "select() slept through the drain it had just caused"
    finally:
        reactor.close()
        client_end.close()
