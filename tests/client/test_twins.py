"""What the two clients do alike, against a real kernel: the calls that once existed on one
only (``noop_batch``, ``fileno``, ``connect``, ``timeout``) and SPAWN's ``restart``/``llm``."""
from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentos import AsyncClient, Client, InvalidArgument, TooLarge

RESTART = {"policy": "on-failure", "max_restarts": 1, "window": "1h", "backoff": "10ms"}
LLM = {"tokens": 1000, "calls_per_minute": 6}


def script(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return str(path)


def restarted(events: list[dict[str, Any]], name: str) -> bool:
    return any(e["topic"] == "agent.restarted" and e.get("name") == name for e in events)


def test_spawn_takes_restart_and_llm_on_the_blocking_client(kernel, tmp_path: Path) -> None:
    c = kernel.client()
    crashy = script(tmp_path, "crashy", "import sys; sys.exit(3)\n")
    with pytest.raises(InvalidArgument, match=r"\$\.restart\.policy"):
        c.spawn("crashy", crashy, sandboxed=False, restart={"policy": "sometimes"})
    with pytest.raises(InvalidArgument, match=r"\$\.llm"):
        c.spawn("crashy", crashy, sandboxed=False, llm={"tokens": "lots"})
    seen = []
    with c.subscribe("agent.*") as events:
        c.spawn("crashy", crashy, sandboxed=False, restart=RESTART, llm=LLM)
        for event in events:
            seen.append(event)
            if event["topic"] == "agent.given_up" and event.get("name") == "crashy":
                break
    assert restarted(seen, "crashy")


def test_spawn_takes_restart_and_llm_on_the_async_client(kernel, tmp_path: Path) -> None:
    crashy = script(tmp_path, "crashy", "import sys; sys.exit(3)\n")

    async def main() -> list[dict[str, Any]]:
        async with await AsyncClient.connect(kernel.socket_path) as c:
            with pytest.raises(InvalidArgument, match=r"\$\.restart\.policy"):
                await c.spawn("crashy", crashy, sandboxed=False, restart={"policy": "sometimes"})
            with pytest.raises(InvalidArgument, match=r"\$\.llm"):
                await c.spawn("crashy", crashy, sandboxed=False, llm={"tokens": "lots"})
            seen = []
            async with await c.subscribe("agent.*") as events:
                await c.spawn("crashy", crashy, sandboxed=False, restart=RESTART, llm=LLM)
                async for event in events:
                    seen.append(event)
                    if event["topic"] == "agent.given_up" and event.get("name") == "crashy":
                        break
            return seen

    assert restarted(asyncio.run(main()), "crashy")


def test_noop_batch_fileno_and_connect_on_both(kernel) -> None:
    payloads = [str(i).encode() for i in range(2000)]
    with Client.connect(kernel.socket_path, max_payload=1 << 16) as c:
        assert c.fileno() >= 0
        assert c.noop_batch(payloads) == payloads
        with pytest.raises(TooLarge):
            c.noop_batch([b"x", bytes(1 << 17)])
        assert c.noop(b"still open") == b"still open"
    assert c.fileno() == -1

    async def main() -> None:
        async with await AsyncClient.connect(kernel.socket_path, max_payload=1 << 16) as ac:
            assert ac.fileno() >= 0
            assert await ac.noop_batch(payloads) == payloads
            with pytest.raises(TooLarge):
                await ac.noop_batch([b"x", bytes(1 << 17)])
            assert await ac.noop(b"still open") == b"still open"
        assert ac.fileno() == -1
    asyncio.run(main())


def test_a_timeout_raises_and_the_connection_goes_on(kernel, tmp_path: Path) -> None:
    sleeper = script(tmp_path, "sleeper", "import time; time.sleep(600)\n")
    c = kernel.client(timeout=0.2)
    c.spawn("sleeper", sleeper, sandboxed=False)
    with pytest.raises(TimeoutError):
        c.wait("sleeper")
    with c.subscribe("nothing.comes") as events, pytest.raises(TimeoutError):
        next(events)
    assert c.noop(b"after") == b"after"

    async def main() -> None:
        async with await AsyncClient.connect(kernel.socket_path, timeout=0.2) as ac:
            with pytest.raises(TimeoutError):
                await ac.wait("sleeper")
            events = await ac.subscribe("nothing.comes")
            with pytest.raises(TimeoutError):
                await events.__anext__()
            assert await ac.noop(b"after") == b"after"
            assert (await ac.kill("sleeper", grace=1))["status"] == "killed"
    asyncio.run(main())
