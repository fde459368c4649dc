"""An agent that thinks with the MCP tools its manifest gives it (mcp.yaml): the kernel runs the
tool calls, asks a human before each note it writes, and streams every step here."""
from __future__ import annotations

import sys

from agentos import Client
from agentos.protocol import Op

PROMPT = " ".join(sys.argv[1:]) or "Add 19 and 23, then save the sum in a note called 'sum'."

with Client() as client:
    for step in client._stream(Op.THINK, {"prompt": PROMPT, "tools": "mcp", "stream": True}):
        if "awaiting_approval" in step:
            print(f"waiting for a human: agentos approve {step['awaiting_approval']['id']}")
        elif "tool_call" in step or "tool_result" in step:
            print(step)
        elif "text" in step:
            print(step["text"], end="", flush=True)
    print()
