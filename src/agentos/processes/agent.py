"""One agent the kernel spawned: what was asked, what runs, how it ended."""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..cgroups import AgentCgroup, CgroupStats, Limits
from ..kernel.identity import Identity
from ..protocol.lifecycle import Status
from ..protocol.requests import SpawnRequestWire
from ..sandbox.initd import InitChannel
from ..supervision.policy import RestartPolicy
from .logs import LogCapture
from .request import Confinement


def qualified(project: str | None, name: str) -> str:
    """How an agent is named from outside its project: ``project/name`` (just ``name`` without one)."""
    return f"{project}/{name}" if project else name


# Slots: with over 30 attributes an instance's __dict__ leaves CPython's shared keys and costs
# ~1.6 KB per live agent, slots ~0.3 KB.
@dataclass(eq=False, slots=True)
class Agent:
    """The agent table's row; runtime handles live here until the agent is reaped."""

    id: str
    name: str
    #: What runs: ``[script, *args]`` for a Python agent, the program's argv otherwise.
    argv: list[str]
    limits: Limits
    sandboxed: bool
    parent: str | None
    log: LogCapture
    cgroup: AgentCgroup
    #: What it holds: its children are checked against this.
    confinement: Confinement
    pid: int = 0
    #: Its pidfd, in the kernel's table only where no descriptor holder runs (``holder``);
    #: otherwise parked there (``exit_watch``), and ``open_pidfd`` makes one when one is needed.
    pidfd: int = -1
    exit_watch: Any = None
    #: Its main process was reaped: from then on its pid may be another process's.
    reaped: bool = False
    status: str = Status.RUNNING
    exit_code: int | None = None
    signal: int | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    ready_at: float | None = None
    isolation: dict[str, Any] = field(default_factory=dict)
    #: Why it is being stopped (``kill``, ``parent``, ``shutdown``, ``timeout``, ``idle_timeout``);
    #: None if nobody asked.
    stop_reason: str | None = None
    #: Usage when it ended; read live from the cgroup while running.
    final_usage: CgroupStats | None = None
    ended: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    escalation: asyncio.TimerHandle | None = None
    #: The SPAWN request as given, and who gave it: what the supervisor replays to restart it.
    request: SpawnRequestWire = field(default_factory=SpawnRequestWire)
    spawner: Identity | None = None
    #: How many times the supervisor restarted this agent before this process (0 for the first).
    restarts: int = 0
    #: Its restart policy, from its SPAWN request as checked then: what the supervisor applies.
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: Where a process exec'd into it starts from (``sandbox.Launched.entry``, a ``Plan``).
    entry: Any = None
    #: A sandbox's init, which starts its execs (``sandbox.Launched.init``); None otherwise.
    init: InitChannel | None = None
    #: Whose PAUSE keeps it frozen: the ids of the paused agents it is (or descends from).
    holds: set[str] = field(default_factory=set)
    #: Seconds from start, and without a syscall, after which the kernel kills it (None: never).
    timeout: float | None = None
    idle_timeout: float | None = None
    #: The team it belongs to (a manifest's project); None for an agent started outside any.
    project: str | None = None
    #: Its host on a cluster node (``cluster.backend.RemoteAgent``); None when it runs here.
    remote: Any = None

    @property
    def qualified_name(self) -> str:
        return qualified(self.project, self.name)

    @property
    def running(self) -> bool:
        return self.status == Status.RUNNING

    @property
    def local_process(self) -> bool:
        """Its main process runs on this host and is not reaped yet (it may have exited)."""
        return self.remote is None and self.pid > 0 and not self.reaped

    def open_pidfd(self) -> int:
        """A new pidfd of its main process, the caller's to close. Call it on the event loop,
        where the kernel reaps: until then the pid is its child's and cannot be reused.
        Raises ProcessLookupError once it was reaped (or for an agent on another host)."""
        if not self.local_process:
            raise ProcessLookupError(f"agent {self.id} has no process on this host to open")
        return os.pidfd_open(self.pid)

    @property
    def shown_status(self) -> str:
        """The status LIST shows: ``paused`` for a running agent the freezer holds."""
        return Status.PAUSED if self.holds and self.status == Status.RUNNING else self.status

    def usage(self) -> CgroupStats:
        if self.final_usage is not None:
            return self.final_usage
        return self.cgroup.stats()

    def info(self, usage: tuple[CgroupStats, float | None] | None = None) -> dict[str, Any]:
        """The agent as SPAWN, LIST, WAIT and KILL answer it: with ``usage`` as given (LIST's, from
        ``UsageCache``: the figures and their age in seconds), else read from its cgroup now."""
        stats, age = usage if usage is not None else (
            self.usage(), None if self.final_usage is not None else 0.0)
        return {
            "id": self.id, "name": self.name, "project": self.project, "pid": self.pid,
            "parent": self.parent, "argv": self.argv,
            "status": self.shown_status, "exit_code": self.exit_code, "signal": self.signal,
            "reason": self.stop_reason,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "ready": self.ready_at is not None, "sandboxed": self.sandboxed, "restarts": self.restarts,
            "timeout": self.timeout, "idle_timeout": self.idle_timeout,
            "limits": self.limits.to_dict(), "usage": stats.to_dict(), "usage_age": age,
            "node": self.remote.node.get("id") if self.remote is not None else None,
        }

    def end_event(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "project": self.project, "pid": self.pid,
                "parent": self.parent, "status": self.status, "exit_code": self.exit_code, "signal": self.signal,
                "reason": self.stop_reason}
