"""Log capture: a real pipe read from an event loop into a size-capped file."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agentos.processes.logs import LogCapture


def run(coro):
    return asyncio.run(coro)


def test_captures_in_order_until_every_writer_closes(tmp_path: Path) -> None:
    async def main() -> None:
        capture = LogCapture(tmp_path / "a.log", max_bytes=1024)
        write_fd = capture.pipe()
        second = os.dup(write_fd)  # a grandchild holding the pipe too
        os.write(write_fd, b"one\n")
        os.close(write_fd)
        await capture.wait_beyond(0)
        assert not capture.finished
        os.write(second, b"two\n")
        os.close(second)
        assert await capture.wait_eof(30)
        capture.close()
        assert capture.read(0, 100) == (0, b"one\ntwo\n")
        assert (tmp_path / "a.log").read_bytes() == b"one\ntwo\n"

    run(main())


def test_rotation_caps_the_disk_used(tmp_path: Path) -> None:
    async def main() -> None:
        capture = LogCapture(tmp_path / "a.log", max_bytes=100)
        write_fd = capture.pipe()
        for i in range(50):
            os.write(write_fd, f"{i:09d}\n".encode())  # 10 bytes each
            await capture.wait_beyond(i * 10)
        os.close(write_fd)
        await capture.wait_eof(30)
        capture.close()
        assert capture.size == 500
        current, rotated = tmp_path / "a.log", tmp_path / "a.log.1"
        assert current.stat().st_size <= 100 and rotated.stat().st_size <= 100
        # What is still on disk reads back contiguously, and ends with the last line.
        offset, data = capture.read(0, 1000)
        assert offset == capture.oldest and offset + len(data) == 500
        assert data.endswith(b"000000049\n")
        assert data == b"".join(f"{i:09d}\n".encode() for i in range(offset // 10, 50))
        # Asking for bytes rotated away starts at the oldest kept byte.
        assert capture.read(5, 10)[0] == capture.oldest

    run(main())


def test_one_large_write_is_split_at_the_cap(tmp_path: Path) -> None:
    async def main() -> None:
        capture = LogCapture(tmp_path / "a.log", max_bytes=100)
        write_fd = capture.pipe()
        os.write(write_fd, bytes(range(250)))
        os.close(write_fd)
        await capture.wait_eof(30)
        capture.close()
        assert (tmp_path / "a.log").read_bytes() == bytes(range(200, 250))
        assert (tmp_path / "a.log.1").read_bytes() == bytes(range(100, 200))
        assert capture.read(0, 1000) == (100, bytes(range(100, 250)))

    run(main())


def test_a_follower_wakes_on_new_output(tmp_path: Path) -> None:
    async def main() -> None:
        capture = LogCapture(tmp_path / "a.log", max_bytes=1024)
        write_fd = capture.pipe()
        waiter = asyncio.ensure_future(capture.wait_beyond(0))
        await asyncio.sleep(0)
        assert not waiter.done()
        os.write(write_fd, b"x")
        await waiter
        os.close(write_fd)
        await capture.wait_eof(30)
        capture.close()
        # Past the end of a finished capture, waiting returns at once.
        await capture.wait_beyond(10)

    run(main())
