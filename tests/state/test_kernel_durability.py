"""SIGKILL the kernel during a burst of STORE and SEND; after a restart every acknowledged
operation is there."""
from __future__ import annotations

import asyncio

from agentos import AsyncClient, Timeout
from agentos.errors import AgentOSError

WORKERS = 16
KILL_AFTER_ACKS = 800


def test_sigkill_under_load_loses_nothing_acknowledged(kernel) -> None:
    setup = kernel.client()
    for n in range(WORKERS):
        setup.register(f"sink{n}")
    acked_keys: list[tuple[str, int]] = []
    acked_messages: dict[int, tuple[int, str]] = {}

    async def worker(client: AsyncClient, n: int) -> None:
        i = 0
        while True:
            key = f"w{n}/{i}"
            await client.store(key, {"n": n, "i": i})
            acked_keys.append((key, i))
            message_id = await client.send(f"sink{n}", key)
            acked_messages[message_id] = (n, key)
            i += 1

    async def killer() -> None:
        while len(acked_keys) + len(acked_messages) < KILL_AFTER_ACKS:
            await asyncio.sleep(0.005)
        kernel.kill()  # SIGKILL while the workers still have requests in flight

    async def burst() -> list[object]:
        clients = [await AsyncClient.connect(kernel.socket_path) for _ in range(4)]
        try:
            return await asyncio.gather(killer(), *(worker(clients[n % 4], n)
                                                    for n in range(WORKERS)),
                                        return_exceptions=True)
        finally:
            for client in clients:
                await client.close()

    outcomes = asyncio.run(burst())
    assert outcomes[0] is None
    assert all(isinstance(o, AgentOSError) for o in outcomes[1:]), outcomes
    assert kernel.proc.returncode == 128 + 9  # the guardian exits as a shell reports a SIGKILL

    kernel.start()
    c = kernel.client()
    missing = [key for key, i in acked_keys if c.fetch(key) != {"n": int(key[1:].split("/")[0]), "i": i}]
    assert missing == []
    received: dict[int, tuple[int, str]] = {}
    for n in range(WORKERS):
        while True:
            try:
                message = c.recv(timeout=0, name=f"sink{n}")
            except Timeout:
                break
            received[message["id"]] = (n, message["body"])
    lost = {mid: v for mid, v in acked_messages.items() if received.get(mid) != v}
    assert lost == {}
    assert len(acked_keys) >= KILL_AFTER_ACKS // 2

