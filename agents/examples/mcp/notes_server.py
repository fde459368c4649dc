"""An MCP server written with the official SDK (``pip install 'agentos[mcp]'``): notes in a directory.

agentos runs it as a sandboxed agent (see mcp.yaml): it can read and write only the directory
the manifest makes writable, and reaches no network. Run alone, it speaks MCP on stdio:
``python notes_server.py /tmp/notes``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

NOTES = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NOTES_DIR", "/tmp/notes"))
server = MCPServer("notes")


def _note(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a note name")
    return NOTES / f"{name}.txt"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def write_note(name: str, text: str) -> str:
    """Write a note (replacing one of the same name)."""
    NOTES.mkdir(parents=True, exist_ok=True)
    _note(name).write_text(text)
    return f"saved {name}"


@server.tool()
def read_note(name: str) -> str:
    """Read a note."""
    return _note(name).read_text()


@server.tool()
def list_notes() -> list[str]:
    """The names of every note."""
    return sorted(p.stem for p in NOTES.glob("*.txt")) if NOTES.is_dir() else []


@server.tool()
def read_file(path: str) -> str:
    """Read any file the server can see (its sandbox decides which)."""
    return Path(path).read_text()


@server.tool()
def crash(after: float = 0.0) -> str:
    """End the server's process abruptly, mid-call (to watch the kernel's restart policy)."""
    time.sleep(after)
    os._exit(3)


if __name__ == "__main__":
    server.run()
