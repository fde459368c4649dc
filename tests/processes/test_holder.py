"""The descriptor holder: a thread with a table of its own keeps what the kernel parks there."""
from __future__ import annotations

import asyncio
import os
import select

import pytest

from agentos.processes.holder import FdHolder


def table() -> set[int]:
    """This process's descriptors (without the one that listed them)."""
    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _open(fd)}


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


async def next_event(events: asyncio.Queue[tuple[int, int]]) -> tuple[int, int]:
    return await asyncio.wait_for(events.get(), 30)


def test_a_parked_pipe_leaves_the_table_and_wakes_its_owner_with_a_copy() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        holder = FdHolder()
        before_threads, start_table = threads(), table()
        holder.start(loop)
        assert holder.available
        thread = (threads() - before_threads).pop()
        events: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        before = table()
        parked = holder.hold(read_end, select.EPOLLIN, lambda fd, ev: events.put_nowait((fd, ev)),
                             lambda fd, err: pytest.fail(f"refused: {err}"), give_back=True)
        assert parked is not None
        assert table() == before - {read_end}, "hold() takes the descriptor out of the table"

        # The pipe lives on (a write does not fail): output wakes the owner with a copy to read.
        os.write(write_end, b"hello")
        copy, ready = await next_event(events)
        assert ready & select.EPOLLIN and os.read(copy, 100) == b"hello"
        assert len(os.listdir(f"/proc/self/task/{thread}/fd")) == 3  # its socket, its epoll, the pipe
        # One-shot: nothing more until re-armed, and re-arming with output waiting wakes at once.
        os.write(write_end, b"more")
        await asyncio.sleep(0.2)
        assert events.empty()
        os.close(copy)
        holder.arm(parked)
        copy, _ = await next_event(events)
        assert os.read(copy, 100) == b"more"
        os.close(copy)

        # Every writer gone: the owner hears it, and reads the end of file.
        holder.arm(parked)
        os.close(write_end)
        copy, ready = await next_event(events)
        assert ready & select.EPOLLHUP and os.read(copy, 100) == b""
        os.close(copy)
        holder.drop(parked)
        while len(holder):
            await asyncio.sleep(0.01)

        # Closed, the thread ends with everything it held.
        holder.close()
        for _ in range(300):
            if thread not in threads():
                break
            await asyncio.sleep(0.01)
        assert thread not in threads()
        assert table() == start_table

    asyncio.run(main())


def test_a_pidfd_is_watched_without_a_copy_and_a_dropped_slot_is_given_again() -> None:
    async def main() -> None:
        holder = FdHolder()
        holder.start(asyncio.get_running_loop())
        ended: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        parked = holder.hold(os.pidfd_open(pid), select.EPOLLIN, lambda fd, ev: ended.put_nowait((fd, ev)),
                             lambda fd, err: pytest.fail(f"refused: {err}"))
        assert parked is not None
        copy, ready = await next_event(ended)
        assert copy == -1 and ready & select.EPOLLIN
        # The kernel reaps by pid: not reaped yet, the pid is still its child's.
        reaped = os.waitid(os.P_PID, pid, os.WEXITED)
        assert reaped is not None and reaped.si_status == 7
        holder.drop(parked)
        while len(holder):
            await asyncio.sleep(0.01)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        again = holder.hold(read_end, select.EPOLLIN, lambda fd, ev: None, lambda fd, err: None)
        assert again is not None and again.slot == parked.slot
        holder.close()
        os.close(write_end)

    asyncio.run(main())


def test_without_a_holder_the_owner_keeps_its_descriptor() -> None:
    holder = FdHolder()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    assert holder.hold(read_end, select.EPOLLIN, lambda fd, ev: None, lambda fd, err: None) is None
    os.fstat(read_end)  # still open, still the caller's
    os.close(read_end)
    os.close(write_end)


def test_when_a_holder_is_full_another_thread_holds_the_rest() -> None:
    async def main() -> None:
        holder = FdHolder(capacity=10)
        before_threads = threads()
        holder.start(asyncio.get_running_loop())
        woken: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        writers = []
        for _ in range(25):
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            writers.append(write_end)
            parked = holder.hold(read_end, select.EPOLLIN, lambda fd, ev: woken.put_nowait((fd, ev)),
                                 lambda fd, err: pytest.fail(f"refused: {err}"), give_back=True)
            assert parked is not None
        assert len(threads() - before_threads) == 3 and len(holder) == 25
        for write_end in writers:
            os.write(write_end, b"x")
        for _ in writers:
            copy, _ = await next_event(woken)
            assert os.read(copy, 10) == b"x"
            os.close(copy)
        holder.close()
        for write_end in writers:
            os.close(write_end)

    asyncio.run(main())
