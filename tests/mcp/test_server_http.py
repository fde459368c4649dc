"""``agentos mcp`` over Streamable HTTP, driven by the official ``mcp`` client: the front door (token,
Origin, Host, loopback only), sessions of both protocol eras and of two tokens that cannot reach
each other's sandboxes or tasks, the Tasks extension, a Unix socket, and nothing left at the end."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from agentos.cli.main import main as agentos_main
from agentos.testing.kernel import KernelProcess
from tests.mcp.server_fixtures import (
    HttpServer,
    TaskHandle,
    TasksExtension,
    agent_status,
    get_task,
    http,
    mcp_kernel,
    refused,
    run,
    structured,
    until,
)

__all__ = ["mcp_kernel"]

TOKENS = ("alice-" + "a" * 26, "bob-" + "b" * 28)
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "probe", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(mcp_kernel: KernelProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("mcp-http")
    tokens = root / "tokens"
    tokens.write_text(f"# one principal a line\n{TOKENS[0]}\n\n{TOKENS[1]}\n")
    started = HttpServer(mcp_kernel, root / "server.log", "--http", "127.0.0.1:0", "--token-file", str(tokens))
    try:
        yield started
    finally:
        started.stop()


def post(url: str, headers: dict[str, str]) -> httpx2.Response:
    async def send() -> httpx2.Response:
        async with httpx2.AsyncClient() as client:
            return await client.post(url, json=INITIALIZE, headers={**HEADERS, **headers})
    return run(send())


def test_the_front_door(server: HttpServer) -> None:
    assert server.line == f"agentos mcp: {server.url}"  # tokens from a file are never printed
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/mcp")
    port = server.url.split(":")[2].split("/")[0]
    good = {"Authorization": f"Bearer {TOKENS[0]}"}

    assert post(server.url, {}).status_code == 401
    assert post(server.url, {"Authorization": "Bearer " + "x" * 32}).status_code == 401
    assert post(server.url, {"Authorization": f"Basic {TOKENS[0]}"}).status_code == 401
    assert post(server.url, {"Authorization": f"Bearer {TOKENS[0][:-1]}"}).status_code == 401
    # DNS rebinding: a page of another origin, or a name that resolves here, gets nothing, token or not.
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1:{port}"):
        assert post(server.url, {**good, "Origin": origin}).status_code == 403, origin
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
        assert post(server.url, {**good, "Host": host}).status_code == 421, host
    assert post(server.url, {**good, "Origin": f"http://127.0.0.1:{port}"}).status_code == 200
    assert post(server.url, {**good, "Host": f"localhost:{port}"}).status_code == 200

    # A session is bound to the token that opened it: another token presenting its id finds none.
    opened = post(server.url, good)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    assert post(server.url, {**session, "Authorization": f"Bearer {TOKENS[1]}"}).status_code == 404

    async def unauthorized() -> None:
        async with http(server.url, None):
            pass
    with pytest.raises(BaseException) as caught:
        run(unauthorized())
    assert "MCPError: Server returned an error response" in leaves(caught.value)  # the client never connects


def leaves(error: BaseException) -> str:
    """Every message in an exception group (the client raises its transport's error in one)."""
    if isinstance(error, BaseExceptionGroup):
        return " | ".join(leaves(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"


def test_sessions_and_tokens_cannot_reach_each_other(server: HttpServer, mcp_kernel: KernelProcess) -> None:
    async def scenario() -> tuple[str, str]:
        async with http(server.url, TOKENS[0], mode="legacy") as alice, \
                http(server.url, TOKENS[0], mode="legacy") as alice_again, \
                http(server.url, TOKENS[0]) as alice_stateless, \
                http(server.url, TOKENS[1]) as bob:
            assert (alice.protocol_version, alice_stateless.protocol_version) == ("2025-11-25", "2026-07-28")
            first = structured(await alice.call_tool("sandbox_create", {}))["sandbox"]
            assert structured(await alice.call_tool("exec", {"sandbox": first, "argv": ["true"]}))["exit_code"] == 0
            bobs = structured(await bob.call_tool("sandbox_create", {}))["sandbox"]
            # Another Mcp-Session-Id of the same token, stateless requests of that token, and another
            # token: each is told the sandbox does not exist, whatever it tries.
            for intruder, target in ((alice_again, first), (alice_stateless, first), (bob, first),
                                     (alice_stateless, bobs), (alice, bobs)):
                for tool, arguments in [("exec", {"sandbox": target, "cmd": "id"}),
                                        ("files_read", {"sandbox": target, "path": "/etc/hostname"}),
                                        ("files_list", {"sandbox": target}),
                                        ("run_code", {"sandbox": target, "code": "1"}),
                                        ("sandbox_kill", {"sandbox": target})]:
                    message = refused(await intruder.call_tool(tool, arguments))
                    assert f"no sandbox {target!r} in this session" in message, (tool, message)
                listed = structured(await intruder.call_tool("sandbox_list", {}))["sandboxes"]
                assert target not in [s["sandbox"] for s in listed]
            # Stateless requests of one token are one session: bob's next request still finds his.
            assert [s["sandbox"] for s in structured(await bob.call_tool("sandbox_list", {}))["sandboxes"]] == [bobs]
            return first, bobs

    first, bobs = run(scenario())
    # Alice's client ended its session (DELETE): its sandbox went with it.
    until(lambda: agent_status(mcp_kernel, first) == "killed", f"{first} killed with its HTTP session")
    assert agent_status(mcp_kernel, bobs) == "running"  # a stateless session ends by idling, or with the server


def test_long_tools_are_tasks_for_clients_that_take_them(server: HttpServer) -> None:
    async def scenario() -> None:
        async with http(server.url, TOKENS[1], extensions=[TasksExtension()]) as bob, \
                http(server.url, TOKENS[0], extensions=[TasksExtension()]) as alice:
            name = structured(await bob.call_tool("sandbox_create", {}))["sandbox"]
            # The extension polls the task to its end: call_tool answers as without one.
            ran = structured(await bob.call_tool("exec", {"sandbox": name, "cmd": "sleep 0.3; echo done"}))
            assert (ran["stdout"], ran["exit_code"]) == ("done\n", 0)
            assert structured(await bob.call_tool("run_code", {"sandbox": name, "code": "6 * 7"}))["result"] == "42"
            handle = await bob.session.call_tool("exec", {"sandbox": name, "argv": ["echo", "later"]},
                                                 allow_claimed=True)
            assert isinstance(handle, TaskHandle) and handle.status == "working"
            # Another token's session asking for it is told there is no such task.
            with pytest.raises(MCPError, match="no task"):
                await get_task(alice.session, handle.task_id)
            # Short tools are never tasks.
            listed = await bob.session.call_tool("sandbox_list", {}, allow_claimed=True)
            assert not isinstance(listed, TaskHandle)
            await bob.call_tool("sandbox_kill", {"sandbox": name})

    run(scenario())


def test_a_unix_socket_with_the_state_tools(mcp_kernel: KernelProcess, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mcp.sock"
    token = "t" * 40
    monkeypatch.setenv("AGENTOS_MCP_TOKEN", token)
    server = HttpServer(mcp_kernel, tmp_path / "server.log", "--unix", str(path), "--capabilities", "spawn,kill,state")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # only this uid may even connect
        assert server.url == "http://localhost/mcp"

        def over_socket(given: str) -> object:
            transport = httpx2.AsyncHTTPTransport(uds=str(path))
            client = httpx2.AsyncClient(transport=transport, headers={"Authorization": f"Bearer {given}"}, timeout=120)
            from mcp import Client
            from mcp.client.streamable_http import streamable_http_client
            return Client(streamable_http_client(server.url, http_client=client))

        async def scenario() -> None:
            async with over_socket(token) as one, over_socket(token) as _two:  # type: ignore[attr-defined]
                names = {tool.name for tool in (await one.list_tools()).tools}
                assert {"state_get", "state_set", "state_delete", "state_keys"} <= names and "think" not in names
                name = structured(await one.call_tool("sandbox_create", {}))["sandbox"]
                echoed = structured(await one.call_tool("exec", {"sandbox": name, "argv": ["echo", "uds"]}))
                assert echoed["stdout"] == "uds\n"
                await one.call_tool("state_set", {"key": "k", "value": {"n": 1}})
                assert structured(await one.call_tool("state_get", {"key": "k"}))["value"] == {"n": 1}
                assert structured(await one.call_tool("state_keys", {}))["keys"] == ["k"]
                await one.call_tool("sandbox_kill", {"sandbox": name})

        run(scenario())
    finally:
        assert server.stop() == 0
    assert not path.exists()


def test_sigterm_ends_every_session_with_its_sandboxes(mcp_kernel: KernelProcess, tmp_path: Path) -> None:
    os.environ.pop("AGENTOS_MCP_TOKEN", None)
    server = HttpServer(mcp_kernel, tmp_path / "server.log", "--http", "127.0.0.1:0")
    token = server.line.split("Bearer ")[1].rstrip(")")  # a token made at start is printed, once

    async def scenario() -> list[str]:
        async with http(server.url, token) as stateless, http(server.url, token, mode="legacy") as session:
            return [structured(await client.call_tool("sandbox_create", {}))["sandbox"]
                    for client in (stateless, session, stateless)]

    names = run(scenario())
    assert server.stop() == 0, server.log()
    for name in names:
        assert agent_status(mcp_kernel, name) == "killed", name
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("args, expected", [
    (["--http", "0.0.0.0:0"], "not a loopback address"),
    (["--http", "example.com:80"], "not an IP address"),
    (["--http", "127.0.0.1"], "HOST:PORT"),
    (["--capabilities", "spawn,fly"], "capabilities: unknown ['fly']"),
    (["--limits", "memory=lots"], "limits.memory"),
    (["--limits", "disk=1Gi"], "limits.disk: unknown"),
    (["--max-sandboxes", "0"], "max_sandboxes"),
])
def test_bad_options_are_refused(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert agentos_main(["mcp", *args]) == 2
    assert expected in capsys.readouterr().err
