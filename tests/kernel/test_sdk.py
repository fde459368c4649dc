"""Client and AsyncClient against a real kernel: concurrency, ordering, streams, errors."""
from __future__ import annotations

import asyncio
import time

import pytest

from agentos import AsyncClient, Client, ConnectionClosed, InternalError, NotFound

from .demo_kernel import CANCEL_LOG, FAIL, RAISE_NOT_FOUND, SLEEP, STREAM


def test_sync_roundtrips(kernel) -> None:
    c = kernel.client()
    assert c.noop() == b""
    assert c.echo("héllo") == "héllo"
    big = bytes(range(256)) * 4096  # 1 MiB, binary
    assert c.noop(big) == big
    assert c.noop_batch([str(i).encode() for i in range(10000)]) == \
        [str(i).encode() for i in range(10000)]


def test_async_many_in_flight(kernel) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(kernel.socket_path) as c:
            replies = await asyncio.gather(*(c.noop(str(i).encode()) for i in range(5000)))
            assert replies == [str(i).encode() for i in range(5000)]
            hellos = await asyncio.gather(*(c.hello() for _ in range(100)))
            assert {h["kernel"] for h in hellos} == {"agentos"}
    asyncio.run(main())


def test_replies_arrive_out_of_order(demo_kernel) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(demo_kernel.socket_path) as c:
            order: list[str] = []

            async def call(tag: str, seconds: float) -> None:
                await c._call(SLEEP, {"seconds": seconds, "tag": tag})
                order.append(tag)

            await asyncio.gather(call("slow", 0.5), call("fast", 0.0), c.noop(b"x"))
            assert order == ["fast", "slow"]
    asyncio.run(main())


def test_stream_sync_and_async(demo_kernel) -> None:
    c = demo_kernel.client()
    items = list(c._stream(STREAM, {"count": 50}))
    assert [i["i"] for i in items[:-1]] == list(range(50)) and items[-1] == {"done": 50}

    async def main() -> None:
        async with await AsyncClient.connect(demo_kernel.socket_path) as ac:
            got = [x async for x in ac._stream(STREAM, {"count": 20})]
            assert len(got) == 21 and got[-1] == {"done": 20}
    asyncio.run(main())


def test_other_calls_while_a_stream_is_open(demo_kernel) -> None:
    c = demo_kernel.client()
    stream = c._stream(STREAM, {"count": 5})
    assert next(stream)["i"] == 0
    assert c.noop(b"interleaved") == b"interleaved"
    assert [x.get("i") for x in stream] == [1, 2, 3, 4, None]


def test_slow_stream_reader_is_backpressured(demo_kernel) -> None:
    from .conftest import kernel_rss
    c = demo_kernel.client()
    rss0 = kernel_rss(demo_kernel.pid)
    # 2000 chunks of 64 KiB = 128 MiB if the kernel buffered them all.
    stream = c._stream(STREAM, {"count": 2000, "pad": 65536})
    next(stream)
    time.sleep(1.0)  # let the kernel run ahead as far as it will
    growth = kernel_rss(demo_kernel.pid) - rss0
    assert growth < 48 * 1024 * 1024, f"kernel buffered {growth} bytes for a stalled stream"
    assert sum(1 for _ in stream) == 2000  # the rest, then END


def test_errors_map_to_typed_exceptions(demo_kernel) -> None:
    c = demo_kernel.client()
    with pytest.raises(NotFound, match="no such thing") as info:
        c._call(RAISE_NOT_FOUND)
    assert info.value.details == {"name": "thing"}
    with pytest.raises(InternalError, match="deliberate handler bug"):
        c._call(FAIL)
    assert c.noop(b"alive") == b"alive"


def test_disconnect_cancels_calls_in_flight(demo_kernel) -> None:
    async def main() -> None:
        c = await AsyncClient.connect(demo_kernel.socket_path)
        task = asyncio.ensure_future(c._call(SLEEP, {"seconds": 3600, "tag": "abandoned"}))
        await asyncio.sleep(0.2)
        await c.close()
        with pytest.raises(ConnectionClosed):
            await task
    asyncio.run(main())
    c = demo_kernel.client()
    deadline = time.monotonic() + 20
    while "abandoned" not in c._call(CANCEL_LOG)["cancelled"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_client_sees_kernel_exit(tmp_path) -> None:
    from agentos import ConnectionClosed
    from agentos.testing.kernel import KernelProcess
    k = KernelProcess(tmp_path / "k").start()
    c = Client(k.socket_path)
    k.kill()
    with pytest.raises((ConnectionClosed, OSError)):
        c.noop(b"x")
    k.socket_path.unlink()
