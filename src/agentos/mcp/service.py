"""The ``mcp`` kernel service: the configured MCP servers, tool policy, and APPROVALS (0x90)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from ..kernel.identity import Identity
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from ..protocol.requests import ApprovalsRequest, SpawnRequestWire
from .approvals import APPROVED, DENIED, Approval, ApprovalQueue
from .config import McpConfig
from .policy import ToolPolicy, ToolRule, check_narrower, check_servers, rules_from_wire
from .servers import McpServer, Tool

if TYPE_CHECKING:
    from ..audit.log import AuditLog
    from ..kernel.daemon import Kernel
    from ..processes.agent import Agent
    from ..processes.service import ProcessService

log = logging.getLogger("agentos.mcp")


class McpService:
    name = "mcp"

    def __init__(self, kernel: Kernel, processes: ProcessService, audit: AuditLog) -> None:
        self.kernel = kernel
        #: Runs each server as an agent, and holds the lineage a caller's tools come from.
        self.processes = processes
        #: Where tool calls and approval decisions are recorded.
        self.audit_log = audit
        try:
            self.config = McpConfig.from_section(kernel.config.section("mcp"))
        except ValueError as exc:
            raise ValueError(f"kernel configuration: {exc}") from None
        if self.config.servers:
            try:
                import mcp  # noqa: F401 - only checked here: the SDK loads when a server starts
            except ImportError:
                raise ValueError("kernel configuration: mcp.servers needs the official MCP SDK: "
                                 "pip install 'agentos[mcp]'") from None
        self.queue = ApprovalQueue(kernel.config.state_dir / "mcp" / "approvals.json", self._audit_decision)
        self.servers: dict[str, McpServer] = {}

    # --- Service protocol ----------------------------------------------------------------

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.APPROVALS: self.approvals}

    async def start(self) -> None:
        self.queue.open()
        self.kernel.add_guard(self._check_spawn, ops=(Op.SPAWN,))
        if self.config.servers:
            self.kernel.when_started(self._start_servers)

    async def _start_servers(self) -> None:
        from .host import ExecHost

        host = ExecHost(self.processes)
        for spec in self.config.servers.values():
            server = self.servers[spec.name] = McpServer(spec, host, self.config.start_timeout)
            server.start()

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))
        self.queue.close()

    def capabilities(self) -> Mapping[str, Any]:
        return {"servers": {name: server.info() for name, server in self.servers.items()},
                "pending_approvals": len(self.queue.pending())}

    # --- tools ---------------------------------------------------------------------------

    async def tools(self) -> list[Tool]:
        """Every tool of every server; a server still starting is waited for (``start_timeout``)."""
        starting = [s for s in self.servers.values() if s.status in ("starting", "restarting")]
        if starting:
            await asyncio.gather(*(s.wait_connected(self.config.start_timeout) for s in starting))
        return [tool for server in self.servers.values() for tool in server.tools.values()]

    def server_of(self, tool: str) -> McpServer | None:
        return self.servers.get(tool.partition(".")[0])

    def policy(self, identity: Identity) -> ToolPolicy:
        """The caller's allowlists, from its own up to its root's; outside clients hold every tool
        (they are the ones who give tools to agents)."""
        approvals = {name: server.spec.approve for name, server in self.servers.items()}
        if identity.agent_id is None:
            return ToolPolicy(None, approvals)
        chain: list[tuple[ToolRule, ...]] = []
        for agent in self._lineage(identity.agent_id):
            chain.append(rules_from_wire(agent.request.tools) or ())
        return ToolPolicy(tuple(chain) or ((),), approvals)

    def owner_of(self, identity: Identity) -> int | None:
        """The uid of the client outside the caller's spawn tree (None: unknown, admins only)."""
        if identity.agent_id is None:
            return identity.uid
        lineage = self._lineage(identity.agent_id)
        root = lineage[-1] if lineage else None
        if root is None or root.spawner is None or root.spawner.agent_id is not None:
            return None
        return root.spawner.uid

    def _lineage(self, agent_id: str) -> list[Agent]:
        """The agent and its ancestors, nearest first, as far as the process table knows them."""
        table = self.processes.table
        out: list[Agent] = []
        current = table.get(agent_id)
        while current is not None:
            out.append(current)
            spawner = current.spawner
            if spawner is None or spawner.agent_id is None:
                break
            current = table.get(spawner.agent_id)
        return out

    def _check_spawn(self, call: Call) -> None:
        """SPAWN's ``tools``: servers this kernel runs, each entry within the spawner's own."""
        rules = rules_from_wire(cast(SpawnRequestWire, call.request).tools)
        if not rules:
            return
        check_servers(rules, self.config.servers)
        if call.identity.agent_id is not None:
            spawner = self.processes.table.get(call.identity.agent_id)
            parent = rules_from_wire(spawner.request.tools) if spawner is not None else None
            check_narrower(rules, parent)

    # --- approvals -----------------------------------------------------------------------

    def request_approval(self, identity: Identity, tool: str, arguments: dict[str, Any]) -> Approval:
        agent = self.processes.table.get(identity.agent_id) if identity.agent_id else None
        return self.queue.request(identity.agent_id, agent.qualified_name if agent else None,
                                  self.owner_of(identity), tool, arguments, self.config.approval_timeout)

    async def approvals(self, call: Call) -> dict[str, Any]:
        request = cast(ApprovalsRequest, call.request)
        identity = call.identity
        action = "list" if request.action is UNSET else request.action
        if action == "list":
            return {"approvals": [r.to_dict() for r in self.queue.pending() if self._may_see(identity, r)]}
        if request.id is UNSET:
            raise InvalidArgument(f"APPROVALS {action}: 'id' (the approval's id) is required", field="id")
        record = self.queue.get(request.id)
        if record is None or not self._may_see(identity, record):
            raise NotFound(f"no approval {request.id!r} that you may see", id=request.id)
        if not self._may_settle(identity, record):
            raise PermissionDenied("only the agent's owner (the user outside its spawn tree) or an "
                                   "admin may settle its approvals; never the agent or its children",
                                   id=record.id)
        if record.status != "pending":
            raise AlreadyExists(f"approval {record.id} is already {record.status}", id=record.id,
                                status=record.status)
        reason = request.reason if isinstance(request.reason, str) else None
        by = {"uid": identity.uid, "pid": identity.pid, "admin": identity.admin}
        return self.queue.settle(record, APPROVED if action == "approve" else DENIED, by, reason)

    def _may_see(self, identity: Identity, record: Approval) -> bool:
        if identity.agent_id is not None:
            return record.agent == identity.agent_id
        return identity.admin or record.owner_uid == identity.uid

    @staticmethod
    def _may_settle(identity: Identity, record: Approval) -> bool:
        # A process inside an agent always comes in as that agent (peer_agent): no agent, nor
        # anything it started, passes as the human who owns it.
        if identity.agent_id is not None:
            return False
        return identity.admin or (record.owner_uid is not None and record.owner_uid == identity.uid)

    # --- audit ---------------------------------------------------------------------------

    def audit(self, identity: Identity, event: str, tool: str, outcome: str, **details: Any) -> None:
        """A record in the audit log for a tool call the kernel made or refused."""
        agent = identity.agent_id
        record = {"ts": round(time.time(), 6), "agent": agent,
                  "name": self._name(agent), "uid": identity.uid, "pid": identity.pid,
                  "op": event, "outcome": outcome, "args": {"tool": tool, **details}}
        self.audit_log.record(record)

    def _audit_decision(self, record: Approval) -> None:
        by = record.decided_by or {}
        self.audit_log.record({
            "ts": round(time.time(), 6), "agent": record.agent, "name": record.name,
            "uid": by.get("uid"), "pid": by.get("pid"), "op": "APPROVAL", "outcome": record.status,
            "args": {"id": record.id, "tool": record.tool, "reason": record.reason,
                     "decided_by": by or "timeout"}})

    def _name(self, agent_id: str | None) -> str | None:
        agent = self.processes.table.get(agent_id) if agent_id else None
        return agent.qualified_name if agent is not None else None
