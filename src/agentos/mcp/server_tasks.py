"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, spec revision 2026-07-28) for long tools.

A client that declares the extension on its request gets a task handle for ``exec`` and
``run_code`` instead of waiting on one open request: it polls ``tasks/get`` until the task is
``completed`` (the ``CallToolResult`` inlined) and may ``tasks/cancel`` it, which kills what runs.
Tasks live in this server's memory, each owned by the MCP session that started it: another
session's ``tasks/get`` of its id is told no such task exists, as the spec asks for an unknown id.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

EXTENSION = "io.modelcontextprotocol/tasks"
#: How often a client is asked to poll, and how long a finished task's result is kept.
POLL_INTERVAL_MS = 250
TTL_MS = 3_600_000


class TaskIdParams(types.RequestParams):
    """``tasks/get``, ``tasks/cancel`` and ``tasks/update`` all name their task."""

    task_id: str


class TaskUpdateParams(TaskIdParams):
    input_responses: dict[str, Any] | None = None


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Task:
    id: str
    owner: str
    job: asyncio.Task[types.CallToolResult] | None = None
    status: str = "working"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    result: dict[str, Any] | None = None
    message: str | None = None

    def wire(self) -> dict[str, Any]:
        """The task as ``tasks/get`` and ``CreateTaskResult`` carry it (a ``DetailedTask``)."""
        body: dict[str, Any] = {"taskId": self.id, "status": self.status, "createdAt": _iso(self.created),
                                "lastUpdatedAt": _iso(self.updated), "ttlMs": TTL_MS,
                                "pollIntervalMs": POLL_INTERVAL_MS}
        if self.message is not None:
            body["statusMessage"] = self.message
        if self.result is not None:
            body["result"] = self.result
        return body


class Tasks:
    """The tasks of every session of one server."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    @staticmethod
    def wanted(ctx: Any) -> bool:
        """The request declared the extension (a task may only be answered to such a request), at a
        revision that has it: a task handle cannot be delivered on a handshake-era connection."""
        capabilities = ctx.session.client_capabilities
        return bool(ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and capabilities is not None
                    and capabilities.extensions and EXTENSION in capabilities.extensions)

    def start(self, owner: str, work: Coroutine[Any, Any, types.CallToolResult]) -> dict[str, Any]:
        """Run ``work`` as a task of ``owner``; its ``CreateTaskResult``."""
        task = Task(id=secrets.token_urlsafe(16), owner=owner)
        task.job = asyncio.get_running_loop().create_task(work)
        task.job.add_done_callback(lambda job: self._finished(task, job))
        self._tasks[task.id] = task
        return {"resultType": "task", **task.wire()}

    def _finished(self, task: Task, job: asyncio.Task[types.CallToolResult]) -> None:
        task.updated = time.time()
        if job.cancelled():
            task.status, task.message = "cancelled", "cancelled by tasks/cancel or the end of its session"
            return
        exc = job.exception()
        if exc is not None:  # the tool runner turns every error into a tool result; this is a bug
            task.status, task.message = "failed", f"internal error: {exc!r}"
            task.result = None
            return
        task.status = "completed"
        task.result = job.result().model_dump(by_alias=True, mode="json", exclude_none=True)

    def find(self, owner: str, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None or task.owner != owner:
            raise MCPError(code=types.INVALID_PARAMS, message=f"no task {task_id!r} in this session")
        return task

    def cancel(self, owner: str, task_id: str) -> None:
        task = self.find(owner, task_id)
        if task.job is not None and not task.job.done():
            task.job.cancel()

    def end(self, owner: str) -> None:
        """Cancel and forget every task of a session that ended."""
        for task in [t for t in self._tasks.values() if t.owner == owner]:
            if task.job is not None and not task.job.done():
                task.job.cancel()
            del self._tasks[task.id]

    def prune(self) -> None:
        """Forget finished tasks past their TTL."""
        expired = time.time() - TTL_MS / 1000
        for task in [t for t in self._tasks.values() if t.status != "working" and t.updated < expired]:
            del self._tasks[task.id]
