"""Put a backlog of THINKs on the kernel from one outside client, for fairness tests and load.

``python -m agentos.testing.think_flood SOCKET COUNT [PREFIX]`` sends COUNT THINKs
(prompts ``PREFIX 0`` ... ``PREFIX COUNT-1``) on one connection, prints ``sent``
once they are all written, then waits for every answer. Exit status 1 if any failed.
"""
from __future__ import annotations

import asyncio
import sys

from ..client import AsyncClient


async def flood(socket_path: str, count: int, prefix: str) -> int:
    async with await AsyncClient.connect(socket_path) as client:
        calls = [asyncio.ensure_future(client.think(f"{prefix} {i}")) for i in range(count)]
        # Two loop turns: every call queues its frame, then the client flushes them in one write.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        print("sent", flush=True)
        replies = await asyncio.gather(*calls)
    return 0 if all(r.success for r in replies) else 1


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    return asyncio.run(flood(argv[0], int(argv[1]), argv[2] if len(argv) == 3 else "flood"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
