"""A kernel running the example Python MCP server (agents/examples/mcp/notes_server.py) as a
sandboxed agent, its THINKs answered by a fake Gemini; agents that think with ``tools: "mcp"``."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agentos import Client
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess, endpoint_check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "agents" / "examples" / "mcp"
ACTOR = Path(__file__).resolve().parent / "actor.py"
TWINS = {"compiled": {}, "python": {"AGENTOS_NO_EXTENSIONS": "1"}}


class McpKernel:
    """A kernel whose manifest declares ``servers``; ``fake`` answers its THINKs."""

    def __init__(self, root: Path, fake: FakeGemini, servers: dict[str, Any], twin: str,
                 **mcp: Any) -> None:
        self.fake = fake
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        manifest = root / "agentos.yaml"
        manifest.write_text(yaml.safe_dump({"agents": {"unused": {"command": ["/bin/true"]}},
                                            "mcp_servers": servers, "kernel": {"mcp": mcp}}))
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
               "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": "", **TWINS[twin]}
        self.process = KernelProcess(root / "k", env=env, args=["--manifest", str(manifest)])

    def start(self, servers: tuple[str, ...]) -> McpKernel:
        self.process.start()
        self.wait_servers(servers)
        with self.client() as c:
            endpoint_check(c)
        self.fake.reset()  # the kernel's own endpoint check is not the tests' traffic
        return self

    def client(self) -> Client:
        return self.process.client()

    def servers(self) -> dict[str, Any]:
        with self.client() as c:
            return c.hello()["capabilities"]["mcp"]["servers"]

    def wait_servers(self, names: tuple[str, ...], restarts: int = 0) -> dict[str, Any]:
        give_up = time.monotonic() + 60
        while True:
            servers = self.servers()
            if all(servers[n]["status"] == "running" and servers[n]["restarts"] >= restarts for n in names):
                return servers
            assert time.monotonic() < give_up, f"MCP servers not running: {servers}\n{self.process.log()}"
            time.sleep(0.05)

    def actor(self, client: Client, name: str, action: dict[str, Any], tools: list[Any],
              capabilities: tuple[str, ...] = ("think",), **spawn: Any) -> dict[str, Any]:
        """Spawn the test agent doing ``action`` with ``tools``."""
        return client.spawn(name, str(ACTOR), args=[json.dumps(action)], tools=tools,
                            capabilities=list(capabilities), readonly_paths=[str(ACTOR.parent)], **spawn)

    def outcome(self, client: Client, agent: dict[str, Any]) -> list[dict[str, Any]]:
        """The lines the actor printed, once it ended (exit 0 checked)."""
        ended = client.wait(id=agent["id"], timeout=120)
        log = client.logs(id=agent["id"])
        assert ended["exit_code"] == 0, f"{ended}\n{log}\n{self.process.log()[-4000:]}"
        return [json.loads(line) for line in log.splitlines() if line.startswith("{")]

    def audit(self, op: str) -> list[dict[str, Any]]:
        with self.client() as c:
            return [r for r in c.audit(limit=1000) if r["op"] == op]

    def stop(self) -> None:
        self.process.stop_checked()


def notes_server(notes: Path, **extra: Any) -> dict[str, Any]:
    """The example server, with the kernel's Python, writing notes only in ``notes``."""
    notes.mkdir(parents=True, exist_ok=True)
    return {"command": [sys.executable, str(EXAMPLE / "notes_server.py"), str(notes)],
            "readonly_paths": [str(EXAMPLE)], "writable_paths": [str(notes)], **extra}


def chunks(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["chunk"] for line in lines if "chunk" in line]


def start(twin: str, root: Path, fake: FakeGemini, **mcp: Any) -> McpKernel:
    """A kernel with the notes server (restarted 0.1 s after a crash) and ``mcp`` settings."""
    servers = {"notes": notes_server(root / "notes", restart={"policy": "on-failure", "backoff": 0.1})}
    return McpKernel(root, fake, servers, twin, **mcp).start(("notes",))
