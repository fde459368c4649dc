"""What the MCP servers need of the processes service: an agent to run in, and an exec in it.

The processes service has no API for kernel-owned execs, so this adapter is the one place that
reaches into it (its SPAWN and EXEC code paths, with the kernel's own identity).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from ..kernel.identity import Identity
from ..processes.exec import STDERR, STDOUT
from ..protocol import Op
from ..protocol.requests import ExecRequest, decode_request
from ..sandbox.initd import IDLE

if TYPE_CHECKING:
    from ..processes.agent import Agent
    from ..processes.service import ProcessService
    from .config import ServerSpec

#: Every MCP server's agent is in this project: ``agentos ps`` shows them as ``mcp/<name>``.
PROJECT = "mcp"


def kernel_identity() -> Identity:
    """The kernel acting for itself: it spawns the servers' agents, as configured by its admin."""
    return Identity(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid(), admin=True)


class ExecHost:
    def __init__(self, processes: ProcessService) -> None:
        self.processes = processes
        self.identity = kernel_identity()

    async def spawn(self, spec: ServerSpec) -> Agent:
        request: dict[str, Any] = {
            "name": spec.name, "project": PROJECT, "script": IDLE, "sandboxed": True,
            "network": spec.network, "writable_paths": list(spec.writable_paths),
            "readonly_paths": list(spec.readonly_paths), "capabilities": [],
            "allow_degraded": spec.allow_degraded,
            # One home for restarts: the server's policy, applied by its supervisor (servers.py).
            "restart": {"policy": "never"}}
        if spec.limits:
            request["limits"] = spec.limits
        if spec.egress is not None:
            request["egress"] = list(spec.egress)
        wire = decode_request(Op.SPAWN, msgspec.json.encode(request))
        info = await self.processes.spawn_as(self.identity, wire)  # type: ignore[arg-type]
        agent = self.processes.table.get(info["id"])
        assert agent is not None
        return agent

    async def exec(self, agent: Agent, spec: ServerSpec) -> Any:
        request = ExecRequest(id=agent.id, argv=list(spec.command), env=dict(spec.env) or msgspec.UNSET,
                              cwd=spec.cwd or msgspec.UNSET, stdin_open=True, background=True)
        ex = await self.processes.execs._start(self.identity, request)
        # Its stdout is the protocol: a full buffer pauses the server rather than losing a message.
        ex.outputs[STDOUT].attached = True
        return ex

    def stdout(self, ex: Any) -> Any:
        return ex.outputs[STDOUT]

    def stderr(self, ex: Any) -> Any:
        return ex.outputs[STDERR]

    async def write(self, ex: Any, data: bytes) -> int:
        async with ex.input_lock:
            return await self.processes.execs._write(ex, data)

    def close_input(self, ex: Any) -> None:
        self.processes.execs._close_stdin(ex)

    def stop(self, ex: Any) -> None:
        self.processes.execs._stop(ex)

    def kill(self, agent: Agent) -> None:
        self.processes._terminate(agent, self.processes.settings.kill_grace, "mcp")
