"""What the ``agentos mcp`` tests share: a kernel per module, the official client over stdio and
Streamable HTTP, and the Tasks extension as a client takes it (the SDK ships no client for it)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client

from agentos.testing.kernel import KernelProcess

TASKS = "io.modelcontextprotocol/tasks"


@pytest.fixture(scope="module")
def mcp_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    """One kernel for the module; it must stop cleanly."""
    k = KernelProcess(tmp_path_factory.mktemp("kernel")).start()
    try:
        yield k
    finally:
        k.stop_checked()


def command(kernel: KernelProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "agentos", "mcp", "--socket", str(kernel.socket_path), "--log-level", "INFO",
            *args]


def stdio(kernel: KernelProcess, *args: str, mode: str = "auto", **kwargs: Any) -> Client:
    """The official client on an ``agentos mcp`` it spawns (its stdio session)."""
    argv = command(kernel, *args)
    return Client(StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ)), mode=mode, **kwargs)


def http(url: str, token: str | None, *, mode: str = "auto", headers: dict[str, str] | None = None,
         **kwargs: Any) -> Client:
    """The official client over Streamable HTTP with ``token`` (none: no Authorization header)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=sent, timeout=120))
    return Client(transport, mode=mode, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def agent_status(kernel: KernelProcess, name: str) -> str | None:
    for agent in kernel.client().list_agents():
        if agent["name"] == name:
            return str(agent["status"])
    return None


def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` (the kernel's view settles asynchronously); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def refused(result: types.CallToolResult) -> str:
    """The message of a tool error (and that it is one)."""
    assert result.is_error, result.structured_content
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


class HttpServer:
    """``agentos mcp --http`` (or ``--unix``) as a process: its URL from the line it prints."""

    def __init__(self, kernel: KernelProcess, log: Path, *args: str) -> None:
        self.log_path = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(command(kernel, *args), stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("agentos mcp: "), self.log()
        self.line = line.strip()
        self.url = line.split()[2]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(60)


# -- the Tasks extension (io.modelcontextprotocol/tasks, 2026-07-28) as a client speaks it ----------

class TaskParams(types.RequestParams):
    task_id: str


class GetTask(types.Request[TaskParams, Literal["tasks/get"]]):
    name_param = "taskId"


class CancelTask(types.Request[TaskParams, Literal["tasks/cancel"]]):
    name_param = "taskId"


class TaskHandle(types.Result):
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    task_id: str
    status: str
    result: dict[str, Any] | None = None
    poll_interval_ms: int | None = None


async def get_task(session: Any, task_id: str) -> DetailedTask:
    return await session.send_request(GetTask(method="tasks/get", params=TaskParams(task_id=task_id)),
                                      DetailedTask)


async def _resolve(handle: TaskHandle, ctx: ClaimContext) -> types.CallToolResult:
    while True:
        task = await get_task(ctx.session, handle.task_id)
        if task.status == "completed":
            return types.CallToolResult.model_validate(task.result)
        assert task.status == "working", task
        await asyncio.sleep((task.poll_interval_ms or 100) / 1000)


class TasksExtension(ClientExtension):
    """Polls a task handle to its result, so ``call_tool`` answers as if there were none."""

    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=_resolve)]
