"""``agentos mcp`` over stdio, driven by the official ``mcp`` client against a real kernel: both
protocol eras, the tools end to end, strict schemas, and sessions that cannot reach each other's
sandboxes and leave none behind."""
from __future__ import annotations

import asyncio
import base64

import mcp_types as types
import pytest

from agentos.testing.kernel import KernelProcess
from tests.mcp.server_fixtures import agent_status, mcp_kernel, refused, run, stdio, structured, until

__all__ = ["mcp_kernel"]

SANDBOX_TOOLS = {"sandbox_create", "exec", "run_code", "files_read", "files_write", "files_list",
                 "sandbox_kill", "sandbox_list"}
#: A 1x1 PNG, displayed by a cell as an object with _repr_png_.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
                       "RU5ErkJggg==")


@pytest.mark.parametrize("mode, version", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_the_tools_end_to_end(mcp_kernel: KernelProcess, mode: str, version: str) -> None:
    async def scenario() -> str:
        async with stdio(mcp_kernel, mode=mode) as client:
            assert client.protocol_version == version
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(listed) == SANDBOX_TOOLS  # think and state only when --capabilities grants them
            for tool in listed.values():
                assert tool.input_schema["type"] == "object"
                assert tool.input_schema["additionalProperties"] is False, tool.name
            assert listed["exec"].input_schema["required"] == ["sandbox"]

            created = structured(await client.call_tool("sandbox_create", {"limits": {"memory": "256Mi"}}))
            name = created["sandbox"]
            assert created["limits"] == {"memory": "256Mi", "pids": 256}
            assert created["network"] is False

            ran = structured(await client.call_tool("exec", {"sandbox": name, "cmd": "echo out; echo err >&2; exit 3"}))
            assert (ran["stdout"], ran["stderr"], ran["exit_code"], ran["timed_out"]) == ("out\n", "err\n", 3, False)
            ran = structured(await client.call_tool("exec", {"sandbox": name, "argv": ["cat"], "stdin": "fed",
                                                             "env": {"X": "1"}, "cwd": "/tmp"}))
            assert ran["stdout"] == "fed" and ran["exit_code"] == 0
            slow = structured(await client.call_tool("exec", {"sandbox": name, "argv": ["sleep", "30"],
                                                              "timeout": 0.5}))
            assert slow["timed_out"] is True

            written = structured(await client.call_tool("files_write", {"sandbox": name, "path": "/tmp/w/a.txt",
                                                                        "content": "héllo"}))
            assert written == {"path": "/tmp/w/a.txt", "written": 6, "size": 6}
            read = structured(await client.call_tool("files_read", {"sandbox": name, "path": "/tmp/w/a.txt"}))
            assert (read["content"], read["encoding"], read["truncated"]) == ("héllo", "utf-8", False)
            await client.call_tool("files_write", {"sandbox": name, "path": "/tmp/w/b.bin", "encoding": "base64",
                                                   "content": base64.b64encode(b"\xff\x00").decode()})
            read = structured(await client.call_tool("files_read", {"sandbox": name, "path": "/tmp/w/b.bin"}))
            assert (base64.b64decode(read["content"]), read["encoding"]) == (b"\xff\x00", "base64")
            listing = structured(await client.call_tool("files_list", {"sandbox": name, "path": "/tmp/w"}))
            assert sorted((e["path"], e["type"], e["size"]) for e in listing["entries"]) == [
                ("a.txt", "file", 6), ("b.bin", "file", 2)]

            cell = structured(await client.call_tool("run_code", {"sandbox": name, "code": "x = 41"}))
            assert cell["error"] is None and cell["result"] is None
            image_cell = (
                "class Dot:\n"
                f"    def _repr_png_(self): return {PNG!r}\n"
                "print('shown'); display(Dot()); x + 1")
            result = await client.call_tool("run_code", {"sandbox": name, "code": image_cell})
            cell = structured(result)
            assert (cell["stdout"], cell["result"]) == ("shown\n", "42")
            images = [block for block in result.content if isinstance(block, types.ImageContent)]
            assert [(base64.b64decode(i.data), i.mime_type) for i in images] == [(PNG, "image/png")]
            failed = structured(await client.call_tool("run_code", {"sandbox": name, "code": "1/0"}))
            assert failed["error"]["name"] == "ZeroDivisionError"

            assert [s["sandbox"] for s in structured(await client.call_tool("sandbox_list", {}))["sandboxes"]] == [name]
            killed = structured(await client.call_tool("sandbox_kill", {"sandbox": name}))
            assert killed["sandbox"] == name
            assert structured(await client.call_tool("sandbox_list", {}))["sandboxes"] == []
            return name

    name = run(scenario())
    assert agent_status(mcp_kernel, name) == "killed"


def test_malformed_arguments_are_tool_errors_and_the_server_serves_on(mcp_kernel: KernelProcess) -> None:
    async def scenario() -> None:
        async with stdio(mcp_kernel) as client:
            name = structured(await client.call_tool("sandbox_create", {}))["sandbox"]
            cases = [
                ("exec", {"sandbox": name}, "exactly one of `argv`"),
                ("exec", {"sandbox": name, "argv": "ls"}, "argv"),
                ("exec", {"sandbox": name, "cmd": "true", "timeout": -1}, "timeout"),
                ("exec", {"sandbox": name, "cmd": "true", "shell": True}, "'shell' was unexpected"),
                ("files_read", {"sandbox": name}, "'path' is a required property"),
                ("files_write", {"sandbox": name, "path": "a", "content": "%%%", "encoding": "base64"}, "base64"),
                ("sandbox_create", {"limits": {"memory": "lots"}}, "limits.memory"),
                ("sandbox_create", {"limits": {"memory": "4Gi"}}, "more than this server allows"),
                ("sandbox_create", {"network": True}, "--allow-network"),
                ("run_code", {"sandbox": name, "code": 7}, "code"),
                ("no_such_tool", {}, "unknown tool"),
                ("files_read", {"sandbox": name, "path": "/no/such/file"}, "not_found"),
            ]
            for tool, arguments, expected in cases:
                message = refused(await client.call_tool(tool, arguments))
                assert expected in message, (tool, arguments, message)
            # Every refusal above left the server serving the same session.
            assert structured(await client.call_tool("exec", {"sandbox": name, "argv": ["true"]}))["exit_code"] == 0

    run(scenario())


def test_a_session_cannot_reach_another_sessions_sandbox_and_leaves_none_behind(mcp_kernel: KernelProcess) -> None:
    async def scenario() -> tuple[str, str]:
        async with stdio(mcp_kernel) as owner:
            mine = structured(await owner.call_tool("sandbox_create", {}))["sandbox"]
            await owner.call_tool("files_write", {"sandbox": mine, "path": "/tmp/secret", "content": "s3cret"})
            async with stdio(mcp_kernel, "--max-sandboxes", "1") as other:
                # The other session guesses the name (it is in the kernel's LIST for this uid).
                for tool, arguments in [
                    ("exec", {"sandbox": mine, "cmd": "cat /tmp/secret"}),
                    ("run_code", {"sandbox": mine, "code": "open('/tmp/secret').read()"}),
                    ("files_read", {"sandbox": mine, "path": "/tmp/secret"}),
                    ("files_write", {"sandbox": mine, "path": "/tmp/secret", "content": "overwritten"}),
                    ("files_list", {"sandbox": mine, "path": "/tmp"}),
                    ("sandbox_kill", {"sandbox": mine}),
                ]:
                    assert f"no sandbox {mine!r} in this session" in refused(await other.call_tool(tool, arguments))
                assert structured(await other.call_tool("sandbox_list", {}))["sandboxes"] == []
                theirs = structured(await other.call_tool("sandbox_create", {}))["sandbox"]
                assert "sandbox_kill one first" in refused(await other.call_tool("sandbox_create", {}))
            # The other session ended (its client closed stdin): its sandbox with it.
            await asyncio.to_thread(until, lambda: agent_status(mcp_kernel, theirs) == "killed",
                                    f"{theirs} killed with its session")
            read = structured(await owner.call_tool("files_read", {"sandbox": mine, "path": "/tmp/secret"}))
            assert read["content"] == "s3cret"
            return mine, theirs

    mine, _ = run(scenario())
    until(lambda: agent_status(mcp_kernel, mine) == "killed", f"{mine} killed when its client disconnected")


def test_an_idle_sandbox_is_killed(mcp_kernel: KernelProcess) -> None:
    async def scenario() -> str:
        async with stdio(mcp_kernel, "--idle-timeout", "1s") as client:
            name = structured(await client.call_tool("sandbox_create", {}))["sandbox"]
            # A command running longer than the idle timeout keeps its sandbox in use.
            ran = structured(await client.call_tool("exec", {"sandbox": name, "cmd": "sleep 2; echo still"}))
            assert ran["stdout"] == "still\n"
            await asyncio.to_thread(until, lambda: agent_status(mcp_kernel, name) == "killed", f"idle {name} killed")
            assert f"no sandbox {name!r}" in refused(await client.call_tool("exec", {"sandbox": name, "cmd": "true"}))
            assert structured(await client.call_tool("sandbox_list", {}))["sandboxes"] == []
            return name

    run(scenario())
