"""MCP's stdio transport over an exec's pipes: the kernel holds the server's stdin and stdout.

The server runs as an exec inside its agent (the route ``run_code``'s interpreter takes), so it
is confined exactly as the agent is; the kernel writes its stdin and reads its stdout, one
JSON-RPC message per line as the stdio transport says, into the SDK's session streams.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import ExecHost

log = logging.getLogger("agentos.mcp")

#: The longest line (one message) a server may send; a longer one ends the connection.
MAX_MESSAGE = 16 * 1024 * 1024
#: How long a server has to exit once its stdin is closed, before its tree is killed.
_EXIT_GRACE = 2.0


class ExecTransport:
    """An ``mcp`` client ``Transport`` over a running exec (its stdout and stdin)."""

    def __init__(self, host: ExecHost, ex: Any, name: str) -> None:
        self.host = host
        self.ex = ex
        self.name = name
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> tuple[Any, Any]:
        import anyio
        from mcp.shared.message import SessionMessage

        self._incoming, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        write_stream, self._outgoing = anyio.create_memory_object_stream[SessionMessage](16)
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._write()),
                       asyncio.ensure_future(self._log_stderr())]
        return read_stream, write_stream

    async def __aexit__(self, *exc: object) -> None:
        # The spec's shutdown: close its stdin, give it a moment, then kill what is left.
        self.host.close_input(self.ex)
        try:
            await asyncio.wait_for(asyncio.shield(self.ex.ended), _EXIT_GRACE)
        except TimeoutError:
            self.host.stop(self.ex)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self) -> None:
        import mcp_types
        from mcp.shared.message import SessionMessage

        buffer = bytearray()
        async with self._incoming:
            while (data := await self.host.stdout(self.ex).take()) is not None:
                buffer += data
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[:end + 1]
                    if not line.strip():
                        continue
                    try:
                        message: Any = SessionMessage(
                            mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
                    except ValueError as exc:
                        log.warning("MCP server %s sent a line that is no JSON-RPC message: %.200r",
                                    self.name, line)
                        message = exc
                    await self._incoming.send(message)
                if len(buffer) > MAX_MESSAGE:
                    log.warning("MCP server %s sent a message over %d bytes: disconnected",
                                self.name, MAX_MESSAGE)
                    self.host.stop(self.ex)
                    return

    async def _write(self) -> None:
        async with self._outgoing:
            async for message in self._outgoing:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                if await self.host.write(self.ex, data.encode()) < len(data.encode()):
                    return  # its stdin is closed: the reader sees the end

    async def _log_stderr(self) -> None:
        # What the server says on stderr goes to the kernel's log (its own LOGS show the idle agent).
        pending = b""
        while (data := await self.host.stderr(self.ex).take()) is not None:
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                log.info("mcp server %s: %s", self.name, line.decode("utf-8", "replace")[:2000])
