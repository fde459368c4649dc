"""``InitChannel`` (sandbox/initd.py), the kernel's end of a sandbox init's control socket, against
a fake init and a fake exec leader: an exec ends on its leader's own ``X`` (sent once its command
has ended and its tree is gone), and a word of init's about the same exec changes nothing after
it; a leader that dies without its ``X`` (killed) ends the exec on init's."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from agentos.sandbox.initd import InitChannel
from agentos.sandbox.plan import Plan
from agentos.sandbox.spec import Ending


class _Exec:
    """One exec started through the channel: the fake leader's end of its control socket."""

    def __init__(self, leader: socket.socket, control: socket.socket) -> None:
        self.leader = leader
        self.control = control
        self.ends: list[Ending] = []


class _Init:
    """The fake init: its end of the control socket, and the channel talking to it."""

    def __init__(self) -> None:
        self.sock, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel = InitChannel(kernel_end, Plan(argv=[], env={}, cwd="/"))
        self.channel.attach(asyncio.get_running_loop())

    async def start(self, token: str) -> _Exec:
        control, leader_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        read, write = os.pipe()
        started = asyncio.ensure_future(self.channel.start(
            token, ["true"], {}, "/", [read, write, write], control, leader_end, terminal=False, timeout=5))
        message, fds = await asyncio.to_thread(self._receive)
        for fd in (read, write, *fds[:3]):
            os.close(fd)
        assert message.startswith(b"E" + token.encode() + b"\0") and len(fds) == 4
        ex = _Exec(socket.socket(fileno=fds[3]), control)
        ex.leader.send(b"P7")  # the command is exec'd: its pid in the sandbox
        assert await started == 7
        self.channel.on_end(token, ex.ends.append)
        return ex

    def _receive(self) -> tuple[bytes, list[int]]:
        message, fds, _, _ = socket.recv_fds(self.sock, 65536, 8)
        return message, fds

    def report(self, token: str, status: int) -> None:
        """Init's X: it reaped the exec's leader, which ended with ``status``."""
        self.sock.send(b"X" + token.encode() + b"\0" + str(status).encode() + b"\0")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


def _with_init(scenario: Callable[[_Init], Awaitable[None]]) -> None:
    async def run() -> None:
        init = _Init()
        try:
            await scenario(init)
        finally:
            init.channel.close()
            init.sock.close()

    asyncio.run(run())


def test_an_exec_ends_on_its_leaders_word_and_inits_later_one_changes_nothing() -> None:
    _with_init(_ends_on_the_leaders_word)


def test_a_command_killed_by_a_signal_ends_the_exec_with_that_signal() -> None:
    _with_init(_killed_by_a_signal)


def test_a_leader_that_dies_without_its_word_ends_the_exec_on_inits() -> None:
    _with_init(_leader_dies_first)


def test_an_exec_forgotten_before_its_end_takes_no_word_after() -> None:
    _with_init(_forgotten)


async def _ends_on_the_leaders_word(init: _Init) -> None:
    ex = await init.start("one")
    ex.leader.send(b"X%d" % (3 << 8))  # its command exited 3, its tree is gone
    await _until(lambda: bool(ex.ends))
    assert ex.ends == [Ending(exit_code=3)]
    # Init's word of the same exec (its leader reaped) comes to nothing: the exec has ended.
    init.report("one", 0)
    second = await init.start("two")  # init's next word is read after that one
    assert ex.ends == [Ending(exit_code=3)]
    assert not init.channel.signal_group("one", signal.SIGTERM)  # ended: its group is not signalled
    assert init.channel.signal_group("two", signal.SIGTERM)
    ex.leader.close()
    second.leader.close()


async def _killed_by_a_signal(init: _Init) -> None:
    ex = await init.start("one")
    ex.leader.send(b"X%d" % signal.SIGTERM)  # a raw wait status: killed by SIGTERM
    await _until(lambda: bool(ex.ends))
    assert ex.ends == [Ending(signal=signal.SIGTERM)]
    ex.leader.close()


async def _leader_dies_first(init: _Init) -> None:
    ex = await init.start("one")
    ex.leader.close()  # killed before its command ended: end of file, no X
    await asyncio.sleep(0.05)
    assert ex.ends == []  # the end of file alone says nothing of how it ended
    init.report("one", signal.SIGKILL)
    await _until(lambda: bool(ex.ends))
    assert ex.ends == [Ending(signal=signal.SIGKILL)]


async def _forgotten(init: _Init) -> None:
    ex = await init.start("one")
    init.channel.forget("one")  # as the kernel does once the exec is over for it
    ex.control.close()  # then its control socket may be closed: nothing reads it any more
    init.report("one", 0)
    await init.start("two")  # init's later words are still read
    assert ex.ends == []
    ex.leader.close()
