"""An agent for the MCP tests: does what its argument (JSON) says, printing each outcome as a line
of JSON for the test to read back from its log.

- ``{"do": "think", "prompt": ...}``: THINK with ``tools: "mcp"``, streamed: every chunk, then END;
- ``{"do": "think", ..., "attack": true}``: the same, and meanwhile it tries to approve its own
  waiting call, and has a child of its own try too;
- ``{"do": "approve", "id": ...}``: approve (as a child, that attack's second half);
- ``{"do": "spawn", "tools": [...]}``: spawn a child with those tools.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

from agentos import AsyncClient
from agentos.errors import SyscallError
from agentos.protocol import Op

ACTION = json.loads(sys.argv[1])


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def think(client: AsyncClient) -> None:
    request = {"prompt": ACTION["prompt"], "tools": "mcp", "stream": True}
    async for item in client._stream(Op.THINK, request):
        say(chunk=item)


async def attack(client: AsyncClient) -> None:
    while not (pending := await client.approvals()):
        await asyncio.sleep(0.05)
    approval = pending[0]["id"]
    try:
        await client.approve(approval)
        say(self_approve="ok")
    except SyscallError as exc:
        say(self_approve=exc.code.value)
    child = await client.spawn("attacker", sys.argv[0], args=[json.dumps({"do": "approve", "id": approval})])
    await client.wait(id=child["id"])
    say(child=await client.logs(id=child["id"]))


async def main() -> None:
    async with await AsyncClient.connect() as client:
        if ACTION["do"] == "think":
            await asyncio.gather(think(client), *([attack(client)] if ACTION.get("attack") else []))
        elif ACTION["do"] == "approve":
            try:
                await client.approve(ACTION["id"])
                say(child_approve="ok")
            except SyscallError as exc:
                say(child_approve=exc.code.value)
        elif ACTION["do"] == "spawn":
            try:
                child = await client.spawn(f"{os.environ['AGENTOS_AGENT_NAME']}-child", command=["/bin/true"],
                                           tools=ACTION["tools"])
                say(spawned=child["id"])
            except SyscallError as exc:
                say(spawn_error=exc.code.value, message=str(exc))


if __name__ == "__main__":
    asyncio.run(main())
