"""The agent ledger: what the kernel runs, on disk, so the next kernel knows what it had.

Agents do not outlive their kernel (docs/processes.md, "Kernel restarts"): the kernel
keeps the *desired state*, as systemd keeps enabled units. Each agent process has one
row in ``<state_dir>/agents.db`` (SQLite, WAL, written by its own thread: the event
loop only queues), written once per lifecycle change: inserted when it starts,
updated when it ends (or the supervisor gives up on it), deleted when the process
table forgets it (``processes.keep_ended``). So the file holds what LIST shows, no
more, and a change never rewrites more than its own row.

A starting kernel reads it once (``recover``). A row still ``running`` belonged to a
kernel that died: that process is gone (or is killed now), and the row becomes
``lost``. What the kernel itself would have kept running comes back: an agent
spawned by an outside client (not by another agent: that one spawns its children
again) whose restart policy restarts it, if it was running when its kernel died or
stopped, or was waiting for the supervisor's restart. It is spawned again from its
remembered SPAWN request, as its original caller (the uid, checked as that uid is
now), with the same name and project and a new id: ``agent.restored``. Every other
agent that was running is reported ``agent.lost``. Ended rows come back as history:
LIST shows them and LOGS reads their files.

The file is trusted only if the kernel's uid owns it and no other uid may write it or
its directory; otherwise it is set aside unread (``Ledger.refused`` says why).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sqlite3
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import ujson

from ..cgroups import CgroupStats, Limits
from ..cgroups.base import instance_is_dead, instance_name, process_start_time
from ..cgroups.none import NoCgroup
from ..errors import AgentOSError, PermissionDenied
from ..kernel.identity import Identity
from ..protocol.lifecycle import END_TOPICS, Status, Topic
from ..protocol.requests import SpawnRequestWire
from ..state.database import Database, DatabaseClosed
from ..state.private import SQLITE_SIDECARS
from .agent import Agent
from .logs import LogCapture
from .request import Confinement, restart_policy

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes")

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    project TEXT,
    parent TEXT,
    argv TEXT NOT NULL,
    pid INTEGER NOT NULL,
    -- /proc/<pid>/stat starttime: tells the agent's process from a later one with its pid.
    pid_start INTEGER,
    -- The kernel that ran it: its cgroup instance name, <pid>-<start time>.
    kernel TEXT NOT NULL,
    log TEXT NOT NULL,
    cgroup TEXT NOT NULL,
    sandboxed INTEGER NOT NULL,
    limits TEXT NOT NULL,
    policy TEXT NOT NULL,
    request BLOB NOT NULL,
    spawner_uid INTEGER,
    spawner_gid INTEGER,
    spawner_agent TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    usage TEXT,
    gave_up INTEGER NOT NULL DEFAULT 0
);
"""

#: Restores started at once on recovery (each is a SPAWN: a sandbox handshake in a worker thread).
_RESTORING = 16

#: What an ended agent holds: nothing (a confinement only matters to a running agent's children).
_NOTHING = Confinement(sandboxed=True, network=False, allow_degraded=False, readable=(), writable=(),
                       limits=Limits())


@dataclass
class Entry:
    """One row of the ledger, as a starting kernel reads it back."""

    seq: int
    id: str
    name: str
    project: str | None
    parent: str | None
    argv: list[str]
    pid: int
    pid_start: int | None
    kernel: str
    log: str
    sandboxed: bool
    limits: dict[str, Any]
    policy: str
    #: None when the stored request no longer decodes as a SPAWN request: never replayed.
    request: SpawnRequestWire | None
    spawner_uid: int | None
    spawner_gid: int | None
    spawner_agent: str | None
    status: str
    exit_code: int | None
    signal: int | None
    reason: str | None
    started_at: float
    ended_at: float | None
    restarts: int
    usage: dict[str, Any] | None
    gave_up: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        try:
            request: SpawnRequestWire | None = msgspec.json.decode(row["request"], type=SpawnRequestWire)
        except msgspec.ValidationError as exc:
            log.warning("ledger: agent %s (%s): its SPAWN request does not decode (%s); it will not "
                        "be spawned again", row["name"], row["id"], exc)
            request = None
        return cls(seq=row["seq"], id=row["id"], name=row["name"], project=row["project"],
                   parent=row["parent"], argv=ujson.loads(row["argv"]), pid=row["pid"],
                   pid_start=row["pid_start"], kernel=row["kernel"], log=row["log"],
                   sandboxed=bool(row["sandboxed"]), limits=ujson.loads(row["limits"]),
                   policy=row["policy"], request=request, spawner_uid=row["spawner_uid"],
                   spawner_gid=row["spawner_gid"], spawner_agent=row["spawner_agent"],
                   status=row["status"], exit_code=row["exit_code"], signal=row["signal"],
                   reason=row["reason"], started_at=row["started_at"], ended_at=row["ended_at"],
                   restarts=row["restarts"], usage=ujson.loads(row["usage"]) if row["usage"] else None,
                   gave_up=bool(row["gave_up"]))

    @property
    def spawner(self) -> Identity | None:
        """Who gave the SPAWN, as the next kernel sees that caller: its admin flag is judged
        again, by this kernel's rules, never taken from the file."""
        if self.spawner_uid is None or self.spawner_gid is None:
            return None
        if self.spawner_agent is not None:
            return Identity(pid=0, uid=self.spawner_uid, gid=self.spawner_gid, agent_id=self.spawner_agent)
        return Identity.from_peer(0, self.spawner_uid, self.spawner_gid)


class Ledger:
    """``<state_dir>/agents.db``: one row per agent process the table holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path, SCHEMA)
        #: This kernel's instance name (``cgroups.instance_name``), on each of its rows.
        self.kernel = ""
        #: Why the file found at start was not trusted (it was set aside unread), if it was not.
        self.refused: str | None = None

    def open(self) -> list[Entry]:
        """Open the ledger and return what earlier kernels left in it, oldest first."""
        self.refused = untrusted(self.path)
        if self.refused is not None:
            aside = self.path.with_name(f"{self.path.name}.refused-{int(time.time())}")
            log.warning("ledger %s not trusted (%s): set aside as %s; no agent of an earlier kernel is "
                        "restored or reported", self.path, self.refused, aside.name)
            for suffix in ("", *SQLITE_SIDECARS):
                try:
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
                except FileNotFoundError:
                    pass
        self.kernel = instance_name()
        self.db.open()
        return self.db.call(_read_all)

    def close(self) -> None:
        """Finish every queued write (a stopping kernel's last rows), then close."""
        self.db.close()

    # -- one write per lifecycle change ----------------------------------------------

    def spawned(self, agent: Agent) -> concurrent.futures.Future[Any] | None:
        """The agent's row; the future resolves once it is committed (None: not recorded)."""
        spawner = agent.spawner
        # A placed agent's pid is its node's: no process of this host may be taken (and killed) for it.
        row = (agent.id, agent.name, agent.project, agent.parent, ujson.dumps(agent.argv), agent.pid,
               _start_time(agent.pid) if agent.local_process else None, self.kernel, str(agent.log.path),
               ujson.dumps([str(d) for d in agent.cgroup.dirs]), int(agent.sandboxed),
               ujson.dumps(agent.limits.to_dict()), agent.restart.policy, msgspec.json.encode(agent.request),
               spawner.uid if spawner is not None else None, spawner.gid if spawner is not None else None,
               spawner.agent_id if spawner is not None else None, agent.status, agent.started_at,
               agent.restarts)
        return self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO agents (id, name, project, parent, argv, pid, pid_start, kernel, log, "
            "cgroup, sandboxed, limits, policy, request, spawner_uid, spawner_gid, spawner_agent, status, "
            "started_at, restarts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row))

    def ended(self, agent: Agent, *, gave_up: bool = False) -> None:
        """The agent ended (or, ``gave_up``, the supervisor will not restart it)."""
        usage = ujson.dumps(agent.final_usage.to_dict()) if agent.final_usage is not None else None
        row = (agent.status, agent.exit_code, agent.signal, agent.stop_reason, agent.ended_at, agent.restarts,
               usage, int(gave_up), agent.id)
        self._write(lambda conn: conn.execute(
            "UPDATE agents SET status = ?, exit_code = ?, signal = ?, reason = ?, ended_at = ?, restarts = ?, "
            "usage = ?, gave_up = ? WHERE id = ?", row))

    def forget(self, agent_ids: Iterable[str]) -> None:
        ids = [(agent_id,) for agent_id in agent_ids]
        if ids:
            self._write(lambda conn: conn.executemany("DELETE FROM agents WHERE id = ?", ids))

    def lost(self, entries: Iterable[Entry], ended_at: float) -> None:
        """Rows of a dead kernel's running agents: ``lost`` (one transaction for them all)."""
        rows = [(Status.LOST, ended_at, entry.id) for entry in entries]
        if rows:
            self._write(lambda conn: conn.executemany(
                "UPDATE agents SET status = ?, ended_at = ? WHERE id = ?", rows))

    def _write(self, fn: Any) -> concurrent.futures.Future[Any] | None:
        try:
            future = self.db.submit(fn)
        except DatabaseClosed:
            log.error("ledger %s is closed: a change was not recorded", self.path)
            return None
        future.add_done_callback(_report_failure)
        return future


#: The ledger's file in the kernel's state dir.
LEDGER_FILE = "agents.db"


def stand_down(state_dir: Path, project: str | None) -> int:
    """Outside any kernel (``agentos down`` after the kernel died): mark ``project``'s agents
    (None: every agent) as never to be restored, so the next kernel reports them lost instead
    of bringing back a team its user took down. Returns how many the next kernel would have
    restored; a missing or untrusted ledger is left alone (0)."""
    path = state_dir / LEDGER_FILE
    if not path.exists() or untrusted(path) is not None:
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
        ours = [entry for entry in _read_all(conn) if project is None or entry.project == project]
        for entry in ours:
            if entry.status == Status.RUNNING:
                entry.status = Status.LOST  # as the next kernel will find it
        restoring = _to_restore(ours)
        conn.executemany("UPDATE agents SET gave_up = 1 WHERE id = ?", [(e.id,) for e in ours if not e.gave_up])
    return len(restoring)


def untrusted(path: Path) -> str | None:
    """Why the ledger at ``path`` must not be read, or None: it (and its SQLite sidecars and its
    directory) must belong to the kernel's uid, be writable by no other, and not be a symlink."""
    uid = os.geteuid()
    for candidate in (path.parent, path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)):
        try:
            info = candidate.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            return f"{candidate} is a symlink"
        if info.st_uid != uid:
            return f"{candidate} belongs to uid {info.st_uid}, not the kernel's ({uid})"
        if info.st_mode & 0o022:
            return f"{candidate} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _read_all(conn: sqlite3.Connection) -> list[Entry]:
    conn.row_factory = sqlite3.Row
    try:
        return [Entry.from_row(row) for row in conn.execute("SELECT * FROM agents ORDER BY seq")]
    finally:
        conn.row_factory = None


def _report_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("ledger write failed: %s", future.exception())


def _start_time(pid: int) -> int | None:
    try:
        return process_start_time(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None


# -- a starting kernel -------------------------------------------------------------------


async def recover(service: ProcessService, entries: list[Entry]) -> None:
    """Bring back what earlier kernels left: history into the table, ``lost`` agents reported,
    restart-policy agents spawned again. Runs once, after every service started and before
    the socket takes clients (so ``agentos up`` finds its team restored, not missing)."""
    live = [entry for entry in entries if entry.kernel != service.ledger.kernel
            and not instance_is_dead(entry.kernel)]
    if live:
        # Another kernel on this state dir (with another socket) still runs them: not ours to judge.
        log.warning("ledger: %d agent(s) of a kernel still running on this state dir (%s) left alone",
                    len(live), ", ".join(sorted({entry.kernel for entry in live})))
        others = {entry.id for entry in live}
        entries = [entry for entry in entries if entry.id not in others]
    if not entries:
        return
    now = time.time()
    was_running = [entry for entry in entries if entry.status == Status.RUNNING]
    for entry in was_running:
        _kill_leftover(entry)
        entry.status, entry.ended_at = Status.LOST, now
    service.ledger.lost(was_running, now)
    restoring = _to_restore(entries)
    agents = [_history(service, entry) for entry in entries]
    for agent in agents:
        service.table.add(agent)
    # Their lineage (oldest first, parents before children): who may see, LOGS and START them.
    for agent in agents:
        service.permissions.register_agent(agent.id, (), agent.spawner, agent.name, agent.project)
    for agent in agents:
        if agent.status == Status.LOST and agent.id not in restoring:
            _report_lost(service, agent, None)
    gate = asyncio.Semaphore(_RESTORING)
    await asyncio.gather(*(_restore(service, agent, gate) for agent in agents if agent.id in restoring))
    service.forget_pruned()


def _to_restore(entries: list[Entry]) -> set[str]:
    """Ids of the rows whose agent the kernel itself would (still) keep running.

    Per agent (name within its project), only its latest process counts; only one an outside
    client spawned (an agent's children are its own to spawn again); only with a restart
    policy; and only if it was running when its kernel died or stopped, or it had ended on its
    own and the supervisor would have restarted it (not given up, nor taken down by ``down``
    while no kernel ran). KILL, ``stop``, ``down``, a timeout or its parent's end stopped it on
    purpose: never.
    """
    latest: dict[tuple[str | None, str], Entry] = {}
    for entry in entries:
        latest[(entry.project, entry.name)] = entry
    chosen = set()
    for entry in latest.values():
        if entry.gave_up or entry.spawner_agent is not None or entry.parent is not None or entry.request is None:
            continue
        policy = restart_policy(entry.request)
        if policy.policy == "never":
            continue
        if entry.status == Status.LOST or (entry.status == Status.KILLED and entry.reason == "shutdown") \
                or (policy.restarts_after(entry.status) and not entry.gave_up):
            chosen.add(entry.id)
    return chosen


def _history(service: ProcessService, entry: Entry) -> Agent:
    """A table row for an earlier kernel's agent: ended, its log read from disk."""
    agent = Agent(id=entry.id, name=entry.name, argv=entry.argv, limits=Limits(**entry.limits),
                  sandboxed=entry.sandboxed, parent=entry.parent,
                  log=LogCapture(Path(entry.log), service.settings.log_max_bytes, append=False),
                  cgroup=NoCgroup(entry.id, [], {}), confinement=_NOTHING, pid=entry.pid,
                  status=entry.status, exit_code=entry.exit_code, signal=entry.signal,
                  started_at=entry.started_at, ended_at=entry.ended_at, stop_reason=entry.reason,
                  final_usage=CgroupStats(**entry.usage) if entry.usage else CgroupStats(),
                  request=entry.request or SpawnRequestWire(), spawner=entry.spawner,
                  restarts=entry.restarts, project=entry.project)
    agent.ended.set_result(None)
    return agent


def _kill_leftover(entry: Entry) -> None:
    """SIGKILL a dead kernel's agent process if it still runs (its pid and start time both match):
    it has no kernel any more, and a restored copy must not run beside it."""
    if entry.pid_start is None or entry.pid <= 0:
        return
    try:
        pidfd = os.pidfd_open(entry.pid)
    except (ProcessLookupError, PermissionError):
        return
    try:
        if _start_time(entry.pid) != entry.pid_start:
            return
        log.warning("agent %s (%s) of the kernel %s that died still runs as pid %d: killing it",
                    entry.name, entry.id, entry.kernel, entry.pid)
        # Its process group first (it leads it, so the group id is still its pid), then itself.
        try:
            os.killpg(entry.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        os.close(pidfd)


def _report_lost(service: ProcessService, agent: Agent, why: str | None) -> None:
    log.warning("agent %s (%s) lost: it was running when its kernel ended%s; its log stays readable (%s)",
                agent.qualified_name, agent.id, f", and {why}" if why else "", agent.log.path)
    service.kernel.events.publish(END_TOPICS[Status.LOST], {**agent.end_event(),
                                                            **({"error": why} if why else {})})


async def _restore(service: ProcessService, agent: Agent, gate: asyncio.Semaphore) -> None:
    def announce(restored: Agent) -> None:
        # Before its row is committed (spawn_as): its end, if it ends at once, comes after this.
        restored.restarts = agent.restarts + 1
        log.info("agent %s (%s, %s under the previous kernel) restored as %s: pid %d", agent.qualified_name,
                 agent.id, agent.status, restored.id, restored.pid)
        service.kernel.events.publish(Topic.RESTORED, {
            "id": restored.id, "name": agent.name, "project": agent.project, "pid": restored.pid,
            "previous_id": agent.id, "previous_status": agent.status})

    async with gate:
        try:
            if agent.spawner is None:
                raise PermissionDenied("the ledger does not say who spawned it")
            await service.spawn_as(agent.spawner, agent.request, started=announce)
        except AgentOSError as exc:
            why = f"could not be restored: {exc}"
            if agent.status == Status.LOST:
                _report_lost(service, agent, why)
            else:
                log.warning("agent %s (%s) %s", agent.qualified_name, agent.id, why)
                service.kernel.events.publish(Topic.GIVEN_UP, {"id": agent.id, "name": agent.name,
                                                              "project": agent.project, "reason": why})
