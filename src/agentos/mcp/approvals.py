"""The approval queue: tool calls that wait for a human, kept on disk.

A call needing approval becomes a record in ``<state_dir>/mcp/approvals.json`` (written whole,
atomically, on each change: the queue is short) and waits until its owner or an admin settles it
(APPROVALS), or ``approval_timeout`` passes (``timed_out``, a denial). Records are keyed by what
they approve: the agent (by its qualified name), the tool and its arguments.

Across a kernel restart: the THINK that waited ends with its kernel, but its record stays
``pending`` until its deadline and can still be settled. An approval granted then is used by the
next identical call (same agent name, tool and arguments), which runs without waiting again; a
new identical call while it is pending waits on the same record. Each approval is used once.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Settled records kept for ``approvals list --all`` (the audit log keeps every decision).
KEEP_SETTLED = 200
PENDING, APPROVED, DENIED, TIMED_OUT, USED = "pending", "approved", "denied", "timed_out", "used"


@dataclass
class Approval:
    id: str
    #: The waiting agent's id and qualified name (None: an outside client's own THINK).
    agent: str | None
    name: str | None
    #: Who may settle it besides an admin: the uid of the client outside the agent's tree.
    owner_uid: int | None
    tool: str
    arguments: dict[str, Any]
    created_at: float
    expires_at: float
    status: str = PENDING
    decided_by: dict[str, Any] | None = None
    decided_at: float | None = None
    reason: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.name, self.tool, _canonical(self.arguments))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


class ApprovalQueue:
    def __init__(self, path: Path, on_settled: Callable[[Approval], None]) -> None:
        self.path = path
        self.on_settled = on_settled
        self._records: dict[str, Approval] = {}
        self._waiters: dict[str, asyncio.Future[Approval]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def open(self) -> None:
        """Load the queue; re-arm each pending record's deadline (one past it times out now)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            raw = []
        self._records = {r["id"]: Approval(**r) for r in raw}
        for record in list(self._records.values()):
            if record.status == PENDING:
                self._arm(record)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def pending(self) -> list[Approval]:
        return [r for r in self._records.values() if r.status == PENDING]

    def all(self) -> list[Approval]:
        return list(self._records.values())

    def get(self, approval_id: str) -> Approval | None:
        return self._records.get(approval_id)

    def request(self, agent: str | None, name: str | None, owner_uid: int | None, tool: str,
                arguments: dict[str, Any], timeout: float) -> Approval:
        """The record this call waits on: an identical pending or unused approved one, else new."""
        now = time.time()
        key = (name, tool, _canonical(arguments))
        for record in self._records.values():
            if record.key() == key and record.status in (PENDING, APPROVED) and record.expires_at > now:
                if record.status == APPROVED:
                    record.status = USED
                    self._save()
                return record
        record = Approval(id=secrets.token_hex(8), agent=agent, name=name, owner_uid=owner_uid,
                          tool=tool, arguments=arguments, created_at=now, expires_at=now + timeout)
        self._records[record.id] = record
        self._save()
        self._arm(record)
        return record

    async def wait(self, record: Approval) -> Approval:
        """Until ``record`` is settled (its deadline settles it ``timed_out``)."""
        if record.status != PENDING:
            return record
        waiter = self._waiters.get(record.id)
        if waiter is None:
            waiter = self._waiters[record.id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(waiter)

    def settle(self, record: Approval, status: str, by: dict[str, Any] | None,
               reason: str | None) -> dict[str, Any]:
        """Decide ``record``; the decision as made (a waiting call then marks it used)."""
        record.status = status
        record.decided_by = by
        record.decided_at = time.time()
        record.reason = reason
        if status == APPROVED:
            # Good for the call that waits, or for the next identical one, for as long again.
            record.expires_at = record.decided_at + (record.expires_at - record.created_at)
        timer = self._timers.pop(record.id, None)
        if timer is not None:
            timer.cancel()
        self.on_settled(record)
        decided = record.to_dict()
        waiter = self._waiters.pop(record.id, None)
        if waiter is not None and not waiter.done():
            if status == APPROVED:
                record.status = USED  # the waiting call takes it
            waiter.set_result(record)
        self._prune()
        self._save()
        return decided

    def _arm(self, record: Approval) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, record.expires_at - time.time())
        self._timers[record.id] = loop.call_later(delay, self._expire, record)

    def _expire(self, record: Approval) -> None:
        self._timers.pop(record.id, None)
        if record.status == PENDING:
            self.settle(record, TIMED_OUT, None, "nobody approved it in time")

    def _prune(self) -> None:
        settled = [r for r in self._records.values() if r.status != PENDING]
        for old in sorted(settled, key=lambda r: r.decided_at or r.created_at)[:-KEEP_SETTLED]:
            del self._records[old.id]

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([r.to_dict() for r in self._records.values()], f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
