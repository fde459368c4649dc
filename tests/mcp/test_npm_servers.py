"""The reference MCP servers from the npm registry, sandboxed by the kernel: installed by this test
run (npm install into a directory it makes), run under the manifest's limits and network policy,
their tools routed, and the filesystem server unable to read what its sandbox does not show."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.testing import FakeGemini, call_reply, text_reply
from tests.mcp.routing_fixtures import McpKernel, chunks

PACKAGES = ("@modelcontextprotocol/server-everything", "@modelcontextprotocol/server-filesystem")
SECRET = "the kernel's host secret"


@pytest.fixture(scope="module")
def npm_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The servers, installed once per run into a fresh directory (never a cache we did not build)."""
    npm = shutil.which("npm")
    assert npm is not None, "npm (node 20) is needed for the reference MCP servers"
    prefix = tmp_path_factory.mktemp("npm")
    started = time.monotonic()
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                    *PACKAGES], check=True, timeout=600, capture_output=True)
    print(f"npm install of the reference MCP servers: {time.monotonic() - started:.1f}s")
    return prefix


@pytest.fixture(scope="module")
def npm_kernel(npm_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpKernel]:
    root = tmp_path_factory.mktemp("npm-kernel")
    data = root / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the data directory")
    secret = root / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text(SECRET)
    node = shutil.which("node")
    modules = npm_prefix / "node_modules" / "@modelcontextprotocol"
    servers = {
        "everything": {"command": [node, str(modules / "server-everything" / "dist" / "index.js"), "stdio"],
                       "readonly_paths": [str(npm_prefix)], "limits": {"memory": "512Mi", "pids": 64}},
        # "/" as its allowed directory: the server would read anything; its sandbox decides.
        "fs": {"command": [node, str(modules / "server-filesystem" / "dist" / "index.js"), "/"],
               "readonly_paths": [str(npm_prefix)], "writable_paths": [str(data)],
               "limits": {"memory": "256Mi", "pids": 32}, "network": False}}
    with FakeGemini().running_in_thread() as fake:
        kernel = McpKernel(root, fake, servers, "compiled").start(("everything", "fs"))
        try:
            yield kernel
        finally:
            kernel.stop()


def test_they_run_sandboxed_under_the_manifests_limits(npm_kernel: McpKernel) -> None:
    servers = npm_kernel.servers()
    assert {"everything.echo", "fs.read_text_file", "fs.write_file"} <= {*servers["everything"]["tools"],
                                                                         *servers["fs"]["tools"]}
    assert servers["fs"]["protocol_version"] in ("2025-11-25", "2025-06-18", "2026-07-28")
    sandbox = servers["fs"]["isolation"]["sandbox"]
    assert sandbox["sandboxed"] and "net" in sandbox["namespaces"], "no network: a namespace of its own"
    with npm_kernel.client() as c:
        agents = {a["name"]: a for a in c.list_agents(project="mcp", status="running")}
    assert agents["fs"]["limits"]["memory"] == 256 * 1024 * 1024 and agents["fs"]["limits"]["pids"] == 32
    assert agents["everything"]["limits"]["memory"] == 512 * 1024 * 1024


def test_their_tools_are_routed_and_the_sandbox_hides_the_host(npm_kernel: McpKernel) -> None:
    data, secret = npm_kernel.root / "data" / "hello.txt", npm_kernel.root / "secret" / "key.txt"
    npm_kernel.fake.script(
        call_reply(("fs.read_text_file", {"path": str(data)}), ("everything.echo", {"message": "hi"}),
                   ("fs.read_text_file", {"path": str(secret)})),
        text_reply("done"))
    with npm_kernel.client() as c:
        agent = npm_kernel.actor(c, "reader", {"do": "think", "prompt": "read"},
                                 ["fs.read_text_file", "everything.echo"])
        results = [s["tool_result"] for s in chunks(npm_kernel.outcome(c, agent)) if "tool_result" in s]
    read, echo, refused = results
    assert read["text"] == "hello from the data directory" and not read.get("is_error")
    assert echo["text"] == "Echo: hi"
    assert refused["is_error"] and SECRET not in str(refused), refused
    assert "ENOENT" in refused["text"], "not found in its view, not refused by the server's own rules"
