"""MCP servers as sandboxed agents: each one started, connected, listed and kept running.

A server is an agent of the kernel's (project ``mcp``, named as configured) running the idle
program, with the server's sandbox, network, paths, limits and egress; the server itself runs in
it as an exec whose stdin and stdout the kernel holds (``transport``). The ``mcp`` SDK's client
negotiates the protocol: ``server/discover`` at 2026-07-28, else the ``initialize`` handshake
offering 2025-11-25. When the server's process ends, or its agent does, calls in flight fail
with ``server_unavailable`` and its restart policy decides whether it comes back (a new exec, and
a new agent if the old one ended) and after which backoff; past ``max_restarts`` in ``window`` it
is ``failed`` and its agent is stopped.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..supervision.policy import RestartHistory

if TYPE_CHECKING:
    from ..processes.agent import Agent
    from .config import ServerSpec
    from .host import ExecHost

log = logging.getLogger("agentos.mcp")


class ToolFailed(Exception):
    """A tool call that got no result: ``kind`` is the typed error the model and the agent see."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "message": self.message}


@dataclass(frozen=True)
class Tool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}"

    def declaration(self) -> dict[str, Any]:
        """The function the model is offered."""
        return {"name": self.qualified, "description": self.description or self.qualified,
                "parameters": self.input_schema}


class McpServer:
    """One configured server and the supervisor loop that keeps it running."""

    def __init__(self, spec: ServerSpec, host: ExecHost, start_timeout: float) -> None:
        self.spec = spec
        self.host = host
        self.start_timeout = start_timeout
        self.status = "starting"
        self.tools: dict[str, Tool] = {}
        self.protocol_version: str | None = None
        self.restarts = 0
        self.agent: Agent | None = None
        self._client: Any = None
        self._ex: Any = None
        self._connected = asyncio.Event()
        self._history = RestartHistory(spec.restart)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._supervise())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.status = "stopped"

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._connected.wait()), timeout)
        except TimeoutError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        return {"status": self.status, "agent": self.agent.id if self.agent is not None else None,
                "protocol_version": self.protocol_version, "restarts": self.restarts,
                "tools": sorted(self.tools), "command": list(self.spec.command),
                # What confines it: its agent's isolation report (namespaces, Landlock, seccomp, cgroup).
                "isolation": self.agent.isolation if self.agent is not None else None}

    # -- calls -----------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's result as the model gets it; ToolFailed when there is none."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        client = self._client
        if client is None:
            raise ToolFailed("server_unavailable", f"MCP server {self.spec.name!r} is {self.status}")
        ended = asyncio.ensure_future(asyncio.shield(self._ex.ended))
        call = asyncio.ensure_future(client.call_tool(tool, arguments))
        try:
            done, _ = await asyncio.wait({call, ended}, timeout=self.spec.call_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if call not in done:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            if ended.done() and not ended.cancelled():
                raise ToolFailed("server_crashed", f"MCP server {self.spec.name!r} ended during the "
                                 f"call (restart policy: {self.spec.restart.policy})")
            raise ToolFailed("timeout", f"{self.spec.name}.{tool} took longer than "
                             f"{self.spec.call_timeout:g}s")
        try:
            result = call.result()
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED or self._ex.ended.done():
                raise ToolFailed("server_crashed", f"MCP server {self.spec.name!r} ended during the "
                                 f"call: {exc}") from None
            raise ToolFailed("tool_error", f"{self.spec.name}.{tool}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a broken connection, whatever the SDK raised
            raise ToolFailed("server_crashed", f"MCP server {self.spec.name!r}: "
                             f"{type(exc).__name__}: {exc}") from None
        return _result(result)

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            ending = await self._run_once()
            if self._stopping:
                return
            if not self.spec.restart.restarts_after(ending):
                self._give_up(f"ended ({ending}); restart policy {self.spec.restart.policy}")
                return
            delay = self._history.next_delay(loop.time())
            if delay is None:
                self._give_up(f"ended ({ending}) after {self.spec.restart.max_restarts} restart(s) "
                              f"within {self.spec.restart.window:g}s")
                return
            self.status = "restarting"
            log.warning("MCP server %s %s: restarting in %gs", self.spec.name, ending, delay)
            await asyncio.sleep(delay)
            self.restarts += 1

    async def _run_once(self) -> str:
        """Run the server until its process ends; how it ended, as an agent's status."""
        from mcp import Client
        from mcp_types import Implementation

        from .transport import ExecTransport

        try:
            if self.agent is None or not self.agent.running:
                self.agent = await self.host.spawn(self.spec)
            self._ex = ex = await self.host.exec(self.agent, self.spec)
        except Exception as exc:  # noqa: BLE001 - reported and subject to the restart policy
            log.error("MCP server %s could not be started: %s", self.spec.name, exc)
            return "failed"
        try:
            client = Client(ExecTransport(self.host, ex, self.spec.name), mode="auto", cache=None,
                            client_info=Implementation(name="agentos", version=__version__))
            async with asyncio.timeout(self.start_timeout):
                await client.__aenter__()
            try:
                async with asyncio.timeout(self.start_timeout):
                    self.tools = await self._list_tools(client)
                self.protocol_version = client.protocol_version
                self._client = client
                self.status = "running"
                self._connected.set()
                log.info("MCP server %s running in agent %s (protocol %s): %d tools", self.spec.name,
                         self.agent.id, self.protocol_version, len(self.tools))
                await asyncio.wait({asyncio.ensure_future(asyncio.shield(ex.ended)),
                                    asyncio.ensure_future(asyncio.shield(self.agent.ended))},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._client = None
                self._connected.clear()
                await client.__aexit__(None, None, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a server that cannot speak MCP has failed
            log.error("MCP server %s: %s: %s", self.spec.name, type(exc).__name__, exc)
            self.host.stop(ex)
            return "failed"
        if self.agent is not None and not self.agent.running:
            return self.agent.status
        return "exited" if ex.exit_code == 0 else "failed"

    async def _list_tools(self, client: Any) -> dict[str, Tool]:
        tools: dict[str, Tool] = {}
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                entry = Tool(self.spec.name, tool.name, tool.description or "",
                             dict(tool.input_schema or {"type": "object"}))
                tools[entry.qualified] = entry
            cursor = page.next_cursor
            if not cursor:
                return tools

    def _give_up(self, reason: str) -> None:
        self.status = "failed"
        self.tools = {}
        log.error("MCP server %s failed: %s", self.spec.name, reason)
        if self.agent is not None and self.agent.running:
            self.host.kill(self.agent)


def _result(result: Any) -> dict[str, Any]:
    """A CallToolResult as a function response: its text, structured content and error flag."""
    texts, other = [], []
    for block in result.content or ():
        if getattr(block, "type", None) == "text":
            texts.append(block.text)
        else:
            other.append(block.model_dump(mode="json", by_alias=True, exclude_none=True))
    out: dict[str, Any] = {}
    if texts:
        out["text"] = "\n".join(texts)
    if other:
        out["content"] = other
    if result.structured_content is not None:
        out["structured"] = result.structured_content
    if result.is_error:
        out["is_error"] = True
    return out
