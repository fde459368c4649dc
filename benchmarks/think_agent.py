"""One THINK client process (an "agent") for the THINK benchmarks.

usage: python think_agent.py SOCKET_PATH
Connects with ``agentos.AsyncClient``, prints "ready", then obeys stdin lines:

- ``burst N``: sends N THINKs at once, waits for every answer, prints one JSON line
  ``{"ok": ..., "errors": {kind: count}, "seconds": ...}``;
- ``storm K MODEL``: keeps K THINKs to MODEL outstanding (each answer, success or not,
  is followed by a new call) until the next line, then cancels them and prints
  ``{"answers": ..., "errors": {kind: count}}``.

Exits when stdin closes. Connecting before the timed part keeps process start and
import time out of the measurement.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from agentos import AsyncClient
from agentos.client.think import ThinkReply


def _tally(replies: list[ThinkReply], errors: Counter[str]) -> int:
    ok = 0
    for reply in replies:
        if reply.success:
            ok += 1
        else:
            errors[str((reply.error or {}).get("type"))] += 1
    return ok


async def burst(client: AsyncClient, count: int) -> dict[str, object]:
    started = time.perf_counter()
    replies = await asyncio.gather(*(client.think(f"burst {i}") for i in range(count)))
    seconds = time.perf_counter() - started
    errors: Counter[str] = Counter()
    return {"ok": _tally(replies, errors), "errors": dict(errors), "seconds": seconds}


async def storm(client: AsyncClient, keep: int, model: str) -> dict[str, object]:
    errors: Counter[str] = Counter()
    answers = 0

    async def caller() -> None:
        nonlocal answers
        while True:
            reply = await client.think("storm", model=model)
            answers += 1
            _tally([reply], errors)

    callers = [asyncio.ensure_future(caller()) for _ in range(keep)]
    await asyncio.to_thread(sys.stdin.readline)
    for task in callers:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    return {"answers": answers, "errors": dict(errors)}


async def main(socket_path: str) -> None:
    async with await AsyncClient.connect(socket_path) as client:
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            words = line.split()
            if words[0] == "burst":
                result = await burst(client, int(words[1]))
            else:
                result = await storm(client, int(words[1]), words[2])
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
