"""Try to spend past this agent's LLM budget: many THINKs at once, then children with more money.

argv[1]: JSON {"calls": N, "child_script": this file's path as the agent sees it}.
argv[2] (optional): "child": only the concurrent THINKs (run as the spawned child).
The agent holds ``think`` and ``spawn`` and runs sandboxed; its SPAWN gave it ``llm.usd``.
Prints {"answered": n, "refused": {reason: n}, "spawn": {"wider": outcome, "unset": outcome}}.
"""
import asyncio
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

plan = json.loads(sys.argv[1])
child = len(sys.argv) > 2 and sys.argv[2] == "child"


async def attack():
    # One connection: an agent's kernel socket is the descriptor it was given, once.
    async with await agentos.AsyncClient.connect() as client:
        # Each asks for far more output than the budget could pay for.
        replies = await asyncio.gather(*(client.think(f"spend {i} " + "money " * 30,
                                                      max_output_tokens=60_000)
                                         for i in range(plan["calls"])))
        spawns = {}
        if not child:
            for label, llm in (("wider", {"usd": 100.0}), ("unset", None)):
                try:
                    await client.spawn(f"overspend-{label}", plan["child_script"],
                                       args=[sys.argv[1], "child"], llm=llm, capabilities=["think"])
                    spawns[label] = "spawned"
                    await client.wait(f"overspend-{label}", timeout=120)  # its spending is the attack
                except agentos.SyscallError as exc:
                    spawns[label] = [exc.code.value, exc.details.get("field")]
        return replies, spawns


replies, spawns = asyncio.run(attack())
refused = collections.Counter((r.error or {}).get("reason") for r in replies if not r.success)
emit(agent="llm_overspend", answered=sum(r.success for r in replies), refused=dict(refused), spawn=spawns)
