"""The ``processes`` service: SPAWN, KILL, LIST, WAIT, LOGS and READY.

Everything runs on the kernel's event loop and nothing in it blocks: exits
arrive through each agent's pidfd, output through a pipe read the same way (both
parked in the descriptor holder while idle: ``holder``), and the SIGTERM -> SIGKILL
escalation is a loop timer.
"""
from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import dataclasses
import functools
import logging
import os
import secrets
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..cgroups import (
    AgentCgroup,
    CgroupDriver,
    CgroupStats,
    Layout,
    NoDriver,
    destroy,
    remove_stale,
)
from ..cluster.settings import LaunchSettings
from ..errors import InvalidArgument, NotFound, PermissionDenied, Timeout, Unavailable
from ..kernel.identity import Identity
from ..kernel.peers import agent_of_pid
from ..kernel.slices import in_slices
from ..kernel.syscalls import Call, Handler
from ..observability import notes
from ..parking import ParkingExecutor
from ..permissions.capabilities import Capability
from ..permissions.principal import caller_id
from ..protocol import Op
from ..protocol.lifecycle import END_TOPICS, Status, Topic
from ..protocol.requests import (
    KillRequest,
    ListRequest,
    LogsRequest,
    PlacementWire,
    SpawnRequestWire,
    StartRequest,
    WaitRequest,
)
from ..sandbox import Launcher, SandboxError
from ..sandbox.mounts import MountOp, default_masks, default_system_ops, inside
from ..sandbox.spec import WORKSPACE_PATH, Ending, reap_by
from . import pid1
from .agent import Agent
from .exec import Execs
from .files import Files, FileSettings
from .holder import FdHolder
from .launcher import init_program, start_process
from .ledger import LEDGER_FILE, Ledger, recover
from .lifecycle import TIMEOUT_REASONS, Lifecycle
from .logs import LogCapture, LogRetention, OutputReaders
from .ports import Ports
from .projects import Projects, ProjectStore
from .request import HOST, Confinement, SpawnRequest, outside_user, parse_grace, parse_timeout
from .settings import ProcessSettings
from .spares import Spares
from .table import AgentTable, AnyOf
from .usage import UsageCache
from .volumes import Attached, Volumes, VolumeStore, check_mount_points
from .workspace import Workspace, Workspaces, stale_embryo

if TYPE_CHECKING:
    from ..cluster.backend import ClusterService, RemoteAgent
    from ..egress.service import EgressService
    from ..kernel.daemon import Kernel
    from ..llm.callers import Callers
    from ..permissions import Permissions

log = logging.getLogger("agentos.processes")

#: How long an ended agent's output may keep arriving (from a tree being killed) before LOGS closes.
_LOG_DRAIN_S = 2.0
_LOG_CHUNK = 64 * 1024
_MAX_TAIL = 16 * 1024 * 1024
#: LIST entries built between two returns to the loop (~20 us each), and table rows scanned.
_LIST_SLICE = 32
_LIST_SCAN = 1024
#: waitid's __WALL: whatever exit signal the agent's clone gave it.
_WALL = 0x40000000
#: Threads removing ended agents' cgroups: on cgroup v1 the host serializes much of it (its
#: cgroup mutex), and more threads than cores made it slower, not faster.
_TEARDOWN_THREADS = 2
#: Ended agents a shutdown forgets between two returns to the loop (tens of us each).
_FORGET_BATCH = 64

#: A started agent and the future of its ledger row's commit (None: not recorded).
_Started = tuple[Agent, 'concurrent.futures.Future[Any] | None']


class ProcessService:
    """Spawns agents in cgroups and sandboxes, and supervises them until they are reaped."""

    name = "processes"

    def __init__(self, kernel: Kernel, *, settings: ProcessSettings, layout: Layout, cgroups: CgroupDriver,
                 permissions: Permissions, launcher: Launcher, llm_registry: Callers,
                 project_stores: Sequence[ProjectStore] = (), cluster: ClusterService | None = None,
                 egress: EgressService | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        #: The host's cgroup hierarchies, and the driver that makes agents' cgroups in them
        #: (started by ``start``; a NoDriver for ``processes.cgroups: none``).
        self.layout = layout
        self.driver = cgroups
        #: Who may do what: checked on every agent a caller names, and told of every agent started.
        self.permissions = permissions
        #: Starts agents' processes in their sandboxes (``sandbox.Launcher``).
        self.launcher = launcher
        #: The LLM gateway's agents: told of each agent's THINK defaults and budgets as it starts.
        self.llm_registry = llm_registry
        #: Runs agents that ask for a node on a cluster (None: a kernel without ``--cluster``).
        self.cluster = cluster
        #: Per-agent egress allowlists (None: a kernel without the egress service).
        self.egress = egress
        self.table = AgentTable(self.settings.keep_ended)
        self.usage = UsageCache(lambda: len(self.table.running_ids()))
        #: Where each agent's pidfd and output pipe wait while idle, outside the kernel's table.
        self.holder = FdHolder()
        self.output_readers = OutputReaders()
        #: Cgroups made ahead for the zygote's embryos, each embryo already in its own.
        self.spares = Spares(lambda: self.driver, launcher)
        #: Where ended agents' cgroups are emptied, read a last time and removed.
        self._teardown = ParkingExecutor(_TEARDOWN_THREADS, thread_name_prefix="agentos-cgroup-teardown")
        self.log_dir = kernel.config.state_dir / "logs"
        self.log_retention = LogRetention(self.log_dir, self.settings.logs)
        #: What runs, on disk: the next kernel restores or reports it (``ledger``).
        self.ledger = Ledger(kernel.config.state_dir / LEDGER_FILE)
        self.workspaces = Workspaces(kernel.config.state_dir)
        self.volume_store = VolumeStore(kernel.config.state_dir, self.workspaces)
        self._background: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[_Started]] = set()
        #: Agents whose process may run before the table has them (the launch is awaited in a
        #: thread): a connection one makes by path then is still that agent, never its uid.
        self._launching: set[str] = set()
        self.execs = Execs(self)
        try:
            files = FileSettings.from_section(kernel.config.section("processes").get("files"))
        except ValueError as exc:
            raise ValueError(f"kernel configuration: {exc}") from None
        self.files = Files(self, files)
        self.ports = Ports(self)
        self.projects = Projects(self, project_stores)
        self.volumes = Volumes(self)
        self.lifecycle = Lifecycle(self)

    # -- service lifecycle ---------------------------------------------------------

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.SPAWN: self.spawn, Op.KILL: self.kill, Op.LIST: self.list,
                Op.WAIT: self.wait, Op.LOGS: self.logs, Op.READY: self.ready, Op.START: self.start_again,
                **self.projects.syscalls(), **self.volumes.syscalls(),
                Op.PAUSE: self.lifecycle.pause, Op.RESUME: self.lifecycle.resume, **self.execs.syscalls(),
                **self.ports.syscalls(), **self.files.syscalls()}

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.kernel.loop.run_in_executor(None, self.log_retention.load)  # O(files): not on the loop
        self.log_retention.start()
        _reap_own_children()
        self.holder.start(self.kernel.loop)
        self.output_readers.start()
        found = self.ledger.open()
        # Once every service runs (a restore is a SPAWN, checked by all of them), before clients come.
        self.kernel.when_started(functools.partial(recover, self, found))
        self.kernel.peer_agent = self.agent_of_peer
        self.lifecycle.start()
        # Before the launcher: every sandbox's mount table must have the workspaces' shared mount.
        self.workspaces.start()
        # From the loop thread: agents' parent-death signal is tied to the thread that starts it.
        self.launcher.start()
        driver = self.driver
        try:
            stale = driver.start()
        except OSError as exc:
            fallback = NoDriver(f"cannot create cgroups under {[str(r) for r in driver.roots]}: {exc}")
            log.warning("agents will run without cgroups: %s", fallback.reason)
            self.driver = fallback
            return
        self.driver = driver
        if stale:
            log.info("removing %d agent cgroup(s) left by a kernel that died", len(stale))
        cleanup = await remove_stale(driver, stale)
        for failure in cleanup.failed:
            log.warning("cgroup of a dead kernel's agent not removed: %s", failure)
        if isinstance(driver, NoDriver):
            log.warning("agents will run without cgroups: %s", driver.reason)
        log.info("cgroups: %s driver on a %s host%s, enforcing %s", driver.name, self.layout.kind,
                 f", in the cgroup delegated to it ({driver.roots[0]})" if driver.delegated else "",
                 ", ".join(sorted(driver.enforceable)) or "nothing")

    async def stop(self) -> None:
        self.log_retention.stop()
        if self.cluster is not None:
            # Agents still waiting for a node end now, not when their placement times out.
            self.cluster.end_pending()
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        running = self.table.running()
        # A slice at a time: signalling an agent reads its /proc status (and on v1 may freeze
        # its cgroup), ~0.1-1 ms here, and thousands of them in one go would stall the loop.
        async for agent in in_slices(running):
            self._terminate(agent, self.settings.stop_grace, "shutdown")
        if running:
            # wait, not gather of shields: it never cancels them either, and makes no wrapper
            # future per agent.
            await asyncio.wait([agent.ended for agent in running])
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._forget_pruned_in_slices()
        self._teardown.shutdown()
        self.ports.close()
        self.execs.close()
        self.files.close()
        self.output_readers.stop()
        self.holder.close()
        await self.spares.close()
        self.launcher.close()
        self.volume_store.close()
        self.workspaces.close()
        self.driver.stop()
        self.ledger.close()

    def capabilities(self) -> Mapping[str, Any]:
        no_disk = self.workspaces.no_disk
        return {"cgroups": self.driver.describe(), "layout": self.layout.to_dict(),
                "sandbox": self.launcher.support.as_dict(),
                # The interpreter agents' scripts run in, bound into every sandbox's view:
                # what a client execs to run Python inside an agent (run_code).
                "python": sys.executable,
                # Each template of sandbox.templates, and its zygote's pid, rss and pss while one runs.
                "templates": self.launcher.templates.report(),
                "workspace": {"disk_quota": no_disk is None, **({"reason": no_disk} if no_disk else {})}}

    # -- syscalls --------------------------------------------------------------------

    async def spawn(self, call: Call) -> dict[str, Any]:
        """Start an agent; answers ``{id, name, pid, status, isolation, ...}``."""
        return await self.spawn_as(call.identity, cast(SpawnRequestWire, call.request))

    async def spawn_as(self, caller: Identity, wire: SpawnRequestWire,
                       started: Callable[[Agent], None] | None = None) -> dict[str, Any]:
        """SPAWN on behalf of ``caller`` (the supervisor restarts agents through this).

        Every field is checked against what ``caller`` holds before anything is made:
        its confinement (sandbox, network, view, limits, budgets), capabilities and egress.
        ``started`` is told the agent as soon as it runs, before its ledger row is committed:
        the agent may end meanwhile, and what ``started`` announces must come before that.
        """
        parent = self._spawning_agent(caller)
        request = SpawnRequest.parse(wire, self._confinement(caller, parent), self.launcher.templates.templates)
        self._check_no_mask_is_writable(request)
        check_mount_points(request.volumes, self._view_paths(request))
        granted = self.permissions.child_capabilities(caller, request.capabilities)
        allow = self.egress.child_allow(caller, request.egress) if self.egress is not None else None
        project = self._spawn_project(parent, wire)
        self.table.check_name_free(request.name, project)
        missing = [name for name in request.limits.requested()
                   if name not in self.driver.enforceable and name not in request.default_limits]
        if missing and not request.allow_degraded:
            raise Unavailable(
                f"limits {missing} cannot be enforced on this host ({self._cgroup_situation()}); "
                "set allow_degraded to run the agent without them", limits=missing,
                driver=self.driver.name)
        notes.step("plan")
        notes.trace_environment(request.env)
        # Held until the agent is in the table: an overlapping SPAWN of the name is refused.
        self.table.reserve(request.name, project)
        # Shielded: once a process may exist, a client hanging up must not orphan it.
        task = self.kernel.loop.create_task(self._start_agent(request, wire, caller, parent, granted, allow,
                                                             project, started))
        self._starting.add(task)
        task.add_done_callback(self._start_done)
        task.add_done_callback(lambda _: self.table.release(request.name, project))
        agent, recorded = await asyncio.shield(task)
        if recorded is not None:
            # SPAWN answers once the agent's row is committed: a kernel killed right after still
            # leaves the next one the agent to report lost (or to restore), never an unknown.
            try:
                await asyncio.wrap_future(recorded)
            except Exception:  # noqa: S110 - a failed write is logged by the ledger
                pass
        # Its usage is not read yet (usage_age null): a cgroup a moment old says nothing, and
        # reading it would cost every SPAWN a dozen file reads on the loop.
        return {**agent.info(self.usage.usage(agent)), "isolation": agent.isolation}

    def _spawning_agent(self, caller: Identity) -> Agent | None:
        """The running agent that asks, if an agent asks."""
        if caller.agent_id is None:
            return None
        agent = self.table.get(caller.agent_id)
        if agent is None or not agent.running:
            raise PermissionDenied("the spawning agent has ended", agent=caller.agent_id)
        return agent

    @staticmethod
    def _spawn_project(parent: Agent | None, wire: SpawnRequestWire) -> str | None:
        """The project of a new agent: the one asked for, or its spawning agent's, which it can never leave."""
        asked = None if wire.project is UNSET else wire.project
        if parent is None:
            return asked
        if asked is not None and asked != parent.project:
            raise PermissionDenied(f"an agent's children belong to its own project "
                                   f"({parent.project or 'none'}), not {asked!r}", field="project")
        return parent.project

    def project_of(self, identity: Identity) -> str | None:
        """The project a caller's names are looked up in: an agent's own; None for an outside client."""
        agent = self.table.get(identity.agent_id) if identity.agent_id is not None else None
        return agent.project if agent is not None else None

    def lookup(self, identity: Identity, ref: dict[str, Any],
               visible: Callable[[Agent], bool] | None = None) -> Agent:
        """The agent ``ref`` (``{id}`` or ``{name}``) names for this caller: every syscall that takes an
        agent's name finds it here, within the caller's project first (``AgentTable.find``)."""
        return self.table.find(ref, self.project_of(identity), visible)

    def _confinement(self, caller: Identity, parent: Agent | None) -> Confinement:
        if parent is not None:
            return parent.confinement
        if self.permissions.is_admin(caller):
            return HOST
        return outside_user(caller.uid)

    def _check_no_mask_is_writable(self, request: SpawnRequest) -> None:
        """A writable path must not hold a masked one: the agent could rename the directory
        above the mask, and its next child would see the secret under the new name."""
        binds = [MountOp("bind", p, p, readonly=False) for p in request.writable_paths]
        masks = [*self._masked(), *default_masks(binds)]
        for path in request.writable_paths:
            held = next((m for m in masks if inside(os.path.realpath(m), path)), None)
            if held is not None:
                raise PermissionDenied(f"writable_paths: {path} holds {held}, which no agent may see "
                                       "or move", field="writable_paths", path=path)

    def _view_paths(self, request: SpawnRequest) -> dict[str, str]:
        """The paths of ``request``'s view a volume may not share (what each is)."""
        paths = {p: "the system view" for p in self._system_view}
        paths.update({p: "the kernel's" for p in self._masked()})
        paths.update({p: "readonly_paths" for p in request.readonly_paths})
        paths.update({p: "writable_paths" for p in request.writable_paths})
        if request.script is not None:
            paths[os.path.dirname(request.script)] = "the script's directory"
        return paths

    def _masked(self) -> list[str]:
        """Host paths no agent may see: the kernel's socket and state (agents reach them only by
        syscalls, under their own identity)."""
        config = self.kernel.config
        return [str(config.socket_path), str(config.state_dir)]

    async def _start_agent(self, request: SpawnRequest, wire: SpawnRequestWire, caller: Identity,
                           parent: Agent | None, granted: frozenset[Capability],
                           allow: tuple[str, ...] | None, project: str | None,
                           started: Callable[[Agent], None] | None) -> _Started:
        agent_id = secrets.token_hex(6)
        remote = self._place(agent_id, request, wire, parent)
        try:
            # A placed agent's cgroup is made on its node, by its host. Here it is only named now,
            # and made by the launch's thread while the sandbox sets itself up (_cgroup_move):
            # mkdir of a (v1 memory) cgroup costs the host more the more cgroups exist (3-5 ms on
            # this box), and neither the loop nor the SPAWN waits for it alone.
            cgroup = remote.cgroup if remote is not None else self.driver.prepare(
                agent_id, request.limits, parent=parent.cgroup if parent is not None else None)
        except OSError as exc:
            raise Unavailable(f"cannot create the agent's cgroup: {exc}", driver=self.driver.name) from None
        notes.step("cgroup")
        self._launching.add(agent_id)
        try:
            return await self._launch(request, wire, caller, parent, granted, allow, project, agent_id,
                                      cgroup, remote, started)
        finally:
            self._launching.discard(agent_id)

    async def _launch(self, request: SpawnRequest, wire: SpawnRequestWire, caller: Identity,
                      parent: Agent | None, granted: frozenset[Capability],
                      allow: tuple[str, ...] | None, project: str | None, agent_id: str,
                      cgroup: AgentCgroup, remote: RemoteAgent | None = None,
                      started: Callable[[Agent], None] | None = None) -> _Started:
        capture = LogCapture(self.log_retention.path_for(request.name, agent_id, project),
                             self.settings.log_max_bytes)
        output_fd = capture.pipe()
        # Its kernel connection; a sandbox served by agentos-init has none (it speaks on init's socket).
        kernel_end, agent_end = (socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                                 if remote is not None or init_program(request) is None else (None, None))
        workspace: Workspace | None = None
        volumes: list[Attached] = []
        try:
            if request.volumes:
                volumes = await self.kernel.loop.run_in_executor(None, functools.partial(
                    self.volume_store.attach, agent_id, request.volumes,
                    caller.uid if request.volume_owner is None else request.volume_owner, project,
                    allow_degraded=request.allow_degraded))
                notes.step("volumes")
            if request.workspace is not None:
                # mkfs and mount block: a worker thread, and only for agents that ask.
                workspace = await self.kernel.loop.run_in_executor(None, functools.partial(
                    self.workspaces.create, agent_id, request.workspace,
                    parent=parent.id if parent is not None else None, allow_degraded=request.allow_degraded))
                notes.step("workspace")
            # The sandbox handshake blocks: a worker thread waits for it, not the loop.
            start = functools.partial(
                start_process, self.launcher, request, agent_id, output_fd=output_fd,
                kernel_fd=agent_end.fileno() if agent_end is not None else None,
                before_exec=self._cgroup_move(cgroup),
                passed_env=self.settings.pass_env, masked_paths=self._masked(),
                tmp_size=request.tmp_size, agent_uid=self.settings.agent_uid,
                workspace=workspace.view if workspace is not None else None,
                volumes=[v.bind for v in volumes])
            try:
                launched = await (remote.launch(
                    request, output_fd=output_fd, kernel_sock=cast(socket.socket, agent_end),
                    settings=LaunchSettings(self.settings.pass_env, self._masked(), self.settings.agent_uid),
                    spawner=caller, project=project)
                    if remote is not None else self.kernel.loop.run_in_executor(None, start))
            except SandboxError as exc:
                mounted = [v.bind.dest for v in volumes] + ([WORKSPACE_PATH] if workspace is not None else [])
                if not stale_embryo(exc, mounted):
                    raise
                log.debug("agent %s: its sandbox was forked before any workspace existed; once more", agent_id)
                launched = await self.kernel.loop.run_in_executor(None, start)
        except SandboxError as exc:
            self._abandon(cgroup, capture, kernel_end, workspace, agent_id)
            raise Unavailable(f"cannot start agent {request.name!r}: {exc}") from None
        except BaseException:
            self._abandon(cgroup, capture, kernel_end, workspace, agent_id)
            raise
        finally:
            os.close(output_fd)
            if agent_end is not None:
                agent_end.close()
        # The zygote's fork, the sandbox's steps (its child timed them), the cgroup attach, exec.
        notes.step("sandbox", launched.steps or ())
        if remote is None and request.sandboxed:
            self.spares.refill()  # the zygote's next embryo, in a spare cgroup before the next SPAWN

        argv = [request.script, *request.argv[1:]] if request.script else request.argv
        agent = Agent(id=agent_id, name=request.name, argv=argv, limits=request.limits,
                      sandboxed=request.sandboxed, parent=caller.agent_id, log=capture,
                      cgroup=cgroup, pid=launched.pid, pidfd=launched.pidfd, request=wire,
                      spawner=caller, restart=request.restart, confinement=request.confinement(
                          self._system_view, self._agent_uid, tuple(v.grant for v in volumes)),
                      entry=launched.entry, init=launched.init, project=project, remote=remote)
        if launched.init is not None:
            launched.init.attach(self.kernel.loop)
        agent.isolation = self._isolation(cgroup, launched.isolation, request, workspace, volumes)
        if remote is not None:
            agent.isolation.update(cgroup=remote.cgroup_report, node=remote.node)
        elif isinstance(wire.placement, PlacementWire):
            agent.isolation["placement"] = "ignored: this kernel drives no cluster (agentos kernel --cluster)"
        self.table.add(agent)
        recorded = self.ledger.spawned(agent)
        self.lifecycle.started(agent, request, parent)
        # Before the connection is served: the agent may call the kernel at once.
        self.permissions.register_agent(agent_id, granted, caller, request.name, project)
        if self.egress is not None and allow is not None:
            self.egress.assign(agent_id, allow)
        self.llm_registry.agent_started(agent_id, request.name, project, caller.agent_id, wire.llm)
        if kernel_end is not None:
            self.kernel.adopt(kernel_end.detach(), Identity(pid=launched.pid, uid=os.getuid(),
                                                             gid=os.getgid(), agent_id=agent_id))
        if remote is not None:
            remote.watch(functools.partial(self._ended, agent))
        else:
            self._watch_exit(agent)
        capture.park(self.holder, self.output_readers)
        log.info("agent %s (%s) started: pid %d, %s", agent.name, agent.id, agent.pid, agent.argv)
        self.kernel.events.publish(Topic.STARTED, {"id": agent.id, "name": agent.name,
                                                   "project": agent.project, "pid": agent.pid, "parent": agent.parent})
        if started is not None:
            # In this step: no end of the agent can be published before what it announces.
            started(agent)
        return agent, recorded

    async def kill(self, call: Call) -> dict[str, Any]:
        """SIGTERM the agent's tree, SIGKILL it after ``grace``; waits for the end unless ``wait`` is false."""
        request = cast(KillRequest, call.request)
        waiting = self._kill_pending(call.identity, request.fields())
        if waiting is not None:
            return waiting
        agent = self._find_visible(call.identity, request.fields())
        self.permissions.check_kill(call.identity, agent.id)
        grace = parse_grace(request, self.settings.kill_grace)
        was_running = agent.running
        if was_running:
            self._terminate(agent, grace, "kill")
            if request.wait is not False:
                await asyncio.shield(agent.ended)
        return {**agent.info(), "killed": was_running}

    def _kill_pending(self, identity: Identity, ref: dict[str, Any]) -> dict[str, Any] | None:
        """KILL of an agent still waiting for a cluster node (a restart's too): it ends now. None
        when ``ref`` names no such agent the caller may see."""
        cluster = self.cluster
        if cluster is None:
            return None
        remote = cluster.waiting(ref, self.project_of(identity), self._pending_observer(identity))
        if remote is None:
            return None
        permissions = self.permissions
        if not permissions.is_admin(identity):
            if not permissions.holds(identity, Capability.KILL):
                raise PermissionDenied(f"{permissions.describe_caller(identity)} lacks the 'kill' capability",
                                       capability="kill")
            if not self._asked_by(identity, remote):
                raise PermissionDenied(f"{permissions.describe_caller(identity)} may kill only agents it "
                                       f"spawned (or their descendants), not {remote.agent_id}",
                                       target=remote.agent_id)
        return remote.kill_pending()

    def _pending_observer(self, identity: Identity) -> Callable[[RemoteAgent], bool]:
        """Which agents waiting for a cluster node ``identity`` may see: those it asked for (itself,
        or an agent it spawned or descends from it); all with ``observe``."""
        if self.permissions.holds(identity, Capability.OBSERVE):
            return lambda remote: True
        return functools.partial(self._asked_by, identity)

    def _asked_by(self, identity: Identity, remote: RemoteAgent) -> bool:
        spawner, me = remote.spawner, caller_id(identity)
        return spawner is not None and (caller_id(spawner) == me or (
            spawner.agent_id is not None and self.permissions.is_descendant(spawner.agent_id, me)))

    async def start_again(self, call: Call) -> dict[str, Any]:
        """START: spawn an ended agent again from its remembered SPAWN request, as the caller.

        The table keeps each ended agent's request (up to ``keep_ended`` of them, for the life of
        the kernel). It is replayed under the caller's identity, so every field is checked against
        what the caller holds now, as a SPAWN of its own would be; and only the agent's ancestors
        (or an admin) may replay it, as only they may KILL it. A running agent is left alone.
        """
        agent = self._find_visible(call.identity, cast(StartRequest, call.request).fields())
        permissions = self.permissions
        if not permissions.is_admin(call.identity) \
                and not permissions.is_descendant(agent.id, caller_id(call.identity)):
            raise PermissionDenied(f"{permissions.describe_caller(call.identity)} may start only agents "
                                   f"it spawned (or their descendants), not {agent.id}", target=agent.id)
        current = self.table.latest(agent.name, agent.project) or agent
        if current.running:
            return {**current.info(), "started": False}
        return {**await self.spawn_as(call.identity, agent.request), "started": True}

    async def list(self, call: Call) -> dict[str, Any]:
        """The agents the caller may observe (running and recently ended), optionally filtered:
        a page (``limit``, ``cursor``), or with ``stream`` every page as a STREAM chunk.

        Nothing per agent runs on the loop in one go: the table is walked a slice at a time,
        cgroup usage is read in a worker thread (``UsageCache``), and the loop serves everyone
        else between slices and between pages."""
        request = cast(ListRequest, call.request)
        statuses = request.status
        wanted = None if statuses is UNSET or statuses is None else (
            {statuses} if isinstance(statuses, str) else set(statuses))
        name = None if request.name is UNSET else request.name
        # A filter, not a lookup: a bare name lists that name in every project; `""` is no project.
        project = None if request.project is UNSET else request.project
        if name is not None and "/" in name:
            project, _, name = name.rpartition("/")
        visible = self._observer(call.identity)
        spawned = self._ancestor_of(call.identity)
        isolation = request.include is not UNSET and "isolation" in request.include
        stream = request.stream is True
        page = self.settings.list_page
        limit = None if request.limit is UNSET else request.limit
        if not stream:
            limit = min(limit or page, page)
        after = 0 if request.cursor is UNSET else int(request.cursor)
        registries = request.include is not UNSET and "registries" in request.include
        if registries and not self.permissions.is_admin(call.identity):
            raise PermissionDenied("include: registries is for admins only", field="include")

        def keep(agent: Agent) -> bool:
            # "running" selects every live agent, paused ones included; "paused" only those.
            return ((wanted is None or agent.shown_status in wanted
                     or (agent.running and Status.RUNNING in wanted))
                    and (project is None or (agent.project or "") == project) and visible(agent))

        if stream:
            call.open_stream()
        agents: list[dict[str, Any]] = []
        sent, more = 0, True
        while more and (limit is None or sent < limit):
            found, after, more = await self._select(after, page if limit is None else min(page, limit - sent),
                                                    keep, name)
            await self.usage.refresh(found)
            for chunk in range(0, len(found), _LIST_SLICE):
                if chunk:
                    await asyncio.sleep(0)
                entries = [{**agent.info(self.usage.usage(agent)),
                            **({"spec": _spec(agent)} if spawned(agent) else {}),
                            # Its volumes and workspace, as ``spec``: its spawners' and admins'.
                            **({"isolation": agent.isolation} if isolation and spawned(agent) else {})}
                           for agent in found[chunk:chunk + _LIST_SLICE]]
                sent += len(entries)
                if stream:
                    # A slice a chunk: encoding one big page would hold the loop as long as building it.
                    await call.stream({"agents": entries})
                else:
                    agents += entries
            if not stream:
                break
            await asyncio.sleep(0)  # between pages, the loop serves everyone else
        cursor = str(after) if more else None
        cluster = self.cluster
        if cursor is None and cluster is not None and (wanted is None or Status.PENDING in wanted):
            sees = self._pending_observer(call.identity)
            pending = [remote.pending_row() for remote in cluster.pending.values()
                       if sees(remote) and (name is None or remote.name == name)
                       and (project is None or (remote.project or "") == project)]
            if stream and pending:
                await call.stream({"agents": pending})
            agents += pending
            sent += len(pending)
        extra = {"registries": self._registries()} if registries else {}
        if stream:
            return {"cursor": cursor, "count": sent, **extra}
        return {"agents": agents, "cursor": cursor, **extra}

    async def _select(self, after: int, count: int, keep: Callable[[Agent], bool],
                      name: str | None) -> tuple[Sequence[Agent], int, bool]:
        """Up to ``count`` agents after position ``after`` that ``keep`` keeps (of ``name`` only,
        if given), scanned a slice at a time; the position scanned to; whether any follow it."""
        found: list[Agent] = []
        while len(found) < count:
            chunk = self.table.page(after, _LIST_SCAN, name)
            for position, agent in chunk:
                after = position
                if keep(agent):
                    found.append(agent)
                    if len(found) == count:
                        break
            if len(chunk) < _LIST_SCAN or len(found) == count:
                break
            await asyncio.sleep(0)
        return found, after, bool(self.table.page(after, 1, name))

    async def wait(self, call: Call) -> dict[str, Any]:
        """Block this request (only) until the agent ends, or with ``until: "ready"`` until READY."""
        request = cast(WaitRequest, call.request)
        agent = self._find_visible(call.identity, request.fields())
        until = "exit" if request.until is UNSET else request.until
        waiting = {agent.ended} if until == "exit" else {agent.ended, agent.ready}
        timeout = parse_timeout(request.timeout)
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise Timeout(f"agent {agent.name!r} did not {'end' if until == 'exit' else 'become ready'} "
                          f"within {timeout}s", id=agent.id, status=agent.status)
        return agent.info()

    async def logs(self, call: Call) -> dict[str, Any]:
        """The last ``tail`` bytes of the agent's output; with ``follow``, stream until it ends."""
        request = cast(LogsRequest, call.request)
        agent = self._find_visible(call.identity, request.fields())
        tail = 64 * 1024 if request.tail is UNSET else request.tail
        follow = request.follow is True
        capture = agent.log
        if capture.pruned:
            raise NotFound(f"agent {agent.qualified_name!r} ({agent.id}) ended and its log was pruned "
                           "by log retention (processes.logs: keep, max_age)", id=agent.id,
                           name=agent.name, status=agent.status, pruned=True)
        offset, data = capture.read(max(0, capture.size - tail), tail)
        head = {"id": agent.id, "name": agent.name, "path": str(capture.path)}
        if not follow:
            return {**head, "data": data.decode(errors="replace"), "offset": offset,
                    "size": offset + len(data), "truncated": offset > 0}
        # A stream even if the agent never writes: the request ends with END, never a plain reply.
        call.open_stream()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        position = offset + len(data)
        if data:
            await call.stream({"data": decoder.decode(data), "offset": offset})
        while True:
            await capture.wait_beyond(position)
            start, data = capture.read(position, _LOG_CHUNK)
            if data:
                position = start + len(data)
                await call.stream({"data": decoder.decode(data), "offset": start})
                continue
            if capture.finished:
                break
        await asyncio.shield(agent.ended)
        rest = decoder.decode(b"", final=True)
        if rest:
            await call.stream({"data": rest, "offset": position})
        return {**head, "size": position, "status": agent.status, "exit_code": agent.exit_code,
                "signal": agent.signal}

    def _observer(self, identity: Identity) -> Callable[[Agent], bool]:
        """Which agents ``identity`` may see: itself and its descendants, or all with ``observe``."""
        permissions = self.permissions
        if permissions.holds(identity, Capability.OBSERVE):
            return lambda agent: True
        return lambda agent: permissions.may_observe(identity, agent.id)

    def _ancestor_of(self, identity: Identity) -> Callable[[Agent], bool]:
        """Which agents ``identity`` spawned (or descend from what it spawned); all for an admin."""
        permissions = self.permissions
        if permissions.is_admin(identity):
            return lambda agent: True
        me = caller_id(identity)
        return lambda agent: permissions.is_descendant(agent.id, me)

    def _find_visible(self, identity: Identity, ref: dict[str, Any]) -> Agent:
        """The agent ``ref`` names, as NotFound when the caller may not see it (no existence leak)."""
        observer = self._observer(identity)
        agent = self.lookup(identity, ref, observer)
        if not observer(agent):
            raise NotFound(f"no agent {ref.get('id') or ref.get('name')!r} that you may observe "
                           "(yours and your descendants; others need the 'observe' capability)",
                           **{k: v for k, v in ref.items() if k in ("id", "name")})
        return agent

    async def ready(self, call: Call) -> dict[str, Any]:
        """An agent tells the kernel it is up (supervisors and WAIT ``until: ready`` see it)."""
        agent_id = call.identity.agent_id
        if agent_id is None:
            raise InvalidArgument("READY is sent by a spawned agent about itself, over a connection "
                                  "of that agent (the one the kernel gave it, or one it opened)")
        agent = self.table.find({"id": agent_id})
        if agent.ready_at is None:
            agent.ready_at = time.time()
            agent.ready.set_result(None)
            self.kernel.events.publish(Topic.READY, {"id": agent.id, "name": agent.name})
        return {"id": agent.id, "name": agent.name, "ready": True}

    # -- lifecycle -------------------------------------------------------------------

    def _terminate(self, agent: Agent, grace: float, reason: str) -> None:
        """SIGTERM now, SIGKILL after ``grace`` (a loop timer: nothing waits here)."""
        if not agent.running:
            return
        self.lifecycle.release(agent)
        if agent.stop_reason is None:
            agent.stop_reason = reason
        loop = self.kernel.loop
        deadline = loop.time() + grace
        if agent.escalation is not None:
            if agent.escalation.when() <= deadline:
                return  # Already stopping, at least as soon.
            agent.escalation.cancel()
        elif self._signal_tree(agent, signal.SIGTERM):
            return  # killed outright: a SIGKILL after the grace would find nothing more to end
        agent.escalation = loop.call_at(deadline, self._escalate, agent)

    def _escalate(self, agent: Agent) -> None:
        agent.escalation = None
        if agent.running:
            log.info("agent %s (%s) outlived its grace period: SIGKILL", agent.name, agent.id)
            self._signal_tree(agent, signal.SIGKILL)

    def _signal_tree(self, agent: Agent, sig: int) -> bool:
        """Signal the agent's processes; True if that was a SIGKILL that ends them all."""
        if agent.remote is not None:
            agent.remote.signal(sig)  # its host signals the tree on its node
            return False
        ends_namespace = agent.local_process and pid1.dropped(agent.pid, sig)
        if ends_namespace:
            # A sandboxed main process without a handler would keep running until the grace
            # period's SIGKILL: end it now, as the signal ends any other process.
            sig = signal.SIGKILL
        if agent.local_process:
            # Not reaped yet, so still the kernel's child: its pid cannot be another process's.
            try:
                os.kill(agent.pid, sig)
            except ProcessLookupError:
                pass
        if ends_namespace:
            return True  # every process of the agent's is in its pid namespace, which ends with its init
        if not agent.cgroup.tracks_tree:
            self._signal_group(agent, sig)
            return False
        if sig == signal.SIGKILL:
            agent.cgroup.kill()
            return False
        for pid in agent.cgroup.procs():
            if pid != agent.pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        return False

    def _signal_group(self, agent: Agent, sig: int) -> None:
        """Without a cgroup: the agent's process group (the launcher makes it a session leader).

        Only until the leader is reaped: its pid, and so the group id, cannot be reused before.
        A process that left the group escapes; a sandboxed agent's pid namespace does not let it.
        """
        if not agent.local_process:
            return
        try:
            os.killpg(agent.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _watch_exit(self, agent: Agent) -> None:
        """Learn when the agent's main process ends: its pidfd is parked in the holder, which
        says so (the kernel then reaps it by pid, still its child), or, without a holder, read
        on the loop from the kernel's table."""
        parked = self.holder.hold(agent.pidfd, select.EPOLLIN, functools.partial(self._on_exit, agent),
                                  functools.partial(self._exit_not_parked, agent))
        if parked is None:
            self.kernel.loop.add_reader(agent.pidfd, self._on_pidfd, agent)
            return
        agent.pidfd, agent.exit_watch = -1, parked

    def _exit_not_parked(self, agent: Agent, pidfd: int, err: int) -> None:
        """The holder could not keep (or lost) the pidfd: the kernel watches its own."""
        agent.exit_watch = None
        if not agent.local_process:
            if pidfd >= 0:
                os.close(pidfd)
            return
        log.warning("agent %s (%s): its pidfd stays in the kernel's table (%s)", agent.name, agent.id,
                    os.strerror(err))
        agent.pidfd = pidfd if pidfd >= 0 else agent.open_pidfd()
        self.kernel.loop.add_reader(agent.pidfd, self._on_pidfd, agent)

    def _on_exit(self, agent: Agent, _copy: int, _events: int) -> None:
        """The holder saw the agent's main process end."""
        ending = self._reap(agent, functools.partial(reap_by, os.P_PID, agent.pid, _WALL | os.WNOWAIT))
        if ending is None:
            self.holder.arm(agent.exit_watch)  # woken before the exit was reapable: wait on
            return
        self.holder.drop(agent.exit_watch)
        agent.exit_watch = None
        self._ended(agent, ending.exit_code, ending.signal)

    def _on_pidfd(self, agent: Agent) -> None:
        """The agent's main process ended (its pidfd in the kernel's table)."""
        ending = self._reap(agent, functools.partial(reap_by, os.P_PIDFD, agent.pidfd, os.WNOWAIT))
        if ending is None:
            return
        self.kernel.loop.remove_reader(agent.pidfd)
        os.close(agent.pidfd)
        agent.pidfd = -1
        self._ended(agent, ending.exit_code, ending.signal)

    def _reap(self, agent: Agent, reaper: Callable[[], Ending | None]) -> Ending | None:
        """How the agent's main process ended (None while it runs), read by ``reaper`` without
        reaping it (WNOWAIT); a teardown thread reaps it: reaping a sandboxed agent's main
        process (its pid namespace's init) took 0.05 ms of the loop at the median but 1-40 ms
        for one or two in a hundred (perf, a shutdown of 100). Without a cgroup its group goes
        first: the group's id is the main pid, the agent's only until reaped."""
        if not agent.cgroup.tracks_tree:
            self._signal_group(agent, signal.SIGKILL)
        ending = reaper()
        if ending is None:
            return None
        agent.reaped = True  # from here on nothing signals its pid: the thread frees it
        if ending.lost:
            log.error("agent %s (%s): pid %d was reaped by someone else", agent.name, agent.id, agent.pid)
        else:
            self._teardown.submit(_release, agent.pid)
        return ending

    def _ended(self, agent: Agent, exit_code: int | None, sig: int | None) -> None:
        """Its main process ended (here or on its node): finish the agent in the background."""
        if agent.init is not None:
            agent.init.close()  # its execs ended with its pid namespace
        agent.exit_code, agent.signal = exit_code, sig
        self._spawn_background(self._finish(agent))

    async def _finish(self, agent: Agent) -> None:
        """Kill what is left of the tree, read the final counters, remove the cgroup, tell everyone."""
        try:
            if agent.escalation is not None:
                agent.escalation.cancel()
                agent.escalation = None
            # Ended while frozen (a fatal signal reaches a v2 frozen task): no frozen leaf is removed.
            self.lifecycle.release(agent)
            last: list[CgroupStats] = []
            if agent.cgroup.tracks_tree:
                # In the teardown threads: on cgroup v1 that is a dozen reads and ten rmdirs an agent.
                await destroy(agent.cgroup, on_empty=lambda: last.append(agent.cgroup.stats()),
                              executor=self._teardown)
            # Killed descendants may linger as zombies until init reaps them; pids.current
            # still counts those, but nothing of the agent runs any more.
            agent.final_usage = dataclasses.replace(last[-1] if last else agent.cgroup.stats(), pids_current=0)
            if self.workspaces.get(agent.id) is not None:
                await self._remove_workspace(agent.id)
            if self.volume_store.held(agent.id):
                await self._detach_volumes(agent.id)
            await agent.log.wait_eof(_LOG_DRAIN_S)
        finally:
            agent.log.close()
            self._end(agent)

    def _end(self, agent: Agent) -> None:
        usage = agent.final_usage
        if agent.stop_reason is None and self.kernel.shutting_down:
            # Its connection was closed (or it was signalled) by the shutdown: however it exited, it was killed.
            agent.stop_reason = "shutdown"
        if agent.stop_reason in TIMEOUT_REASONS:
            agent.status = Status.TIMED_OUT
        elif agent.stop_reason is not None:
            agent.status = Status.KILLED
        elif agent.signal == signal.SIGKILL and usage is not None and (usage.oom_kills or 0) > 0:
            agent.status = Status.OOM_KILLED
        elif agent.exit_code == 0:
            agent.status = Status.EXITED
        else:
            agent.status = Status.FAILED
        agent.ended_at = time.time()
        self.table.ended(agent)
        self.usage.forget(agent.id)
        self.ledger.ended(agent)
        self.log_retention.ended(agent.log.path, agent.project, agent.ended_at)
        self.lifecycle.forget(agent)
        for conn in self.kernel.connections_of(agent.id):
            conn.close()
        for child in self.table.children(agent):
            self._terminate(child, self.settings.kill_grace, "parent")
        if not self.kernel.shutting_down:
            # A shutdown forgets them once they have all ended (stop): one per end took ~6 %
            # of the loop's CPU in a shutdown of 1,000 (cProfile).
            self.forget_pruned()
        log.info("agent %s (%s) %s: exit code %s, signal %s", agent.name, agent.id, agent.status,
                 agent.exit_code, agent.signal)
        self.kernel.events.publish(END_TOPICS[agent.status], agent.end_event())
        agent.ended.set_result(None)

    # -- helpers ---------------------------------------------------------------------

    def forget_pruned(self) -> None:
        """Drop the ended agents past ``keep_ended`` from the table, the ledger and the services."""
        self._forget(self.table.prune())

    async def _forget_pruned_in_slices(self) -> None:
        """``forget_pruned`` at the end of a shutdown, which forgets the agents it ended all at
        once (``_end``) instead of one per end; a batch at a time, between returns to the loop."""
        forgotten = self.table.prune()
        for start in range(0, len(forgotten), _FORGET_BATCH):
            self._forget(forgotten[start:start + _FORGET_BATCH])
            await asyncio.sleep(0)

    def _forget(self, forgotten: Sequence[Agent]) -> None:
        if not forgotten:
            return
        self.ledger.forget(agent.id for agent in forgotten)
        for old in forgotten:
            self.permissions.forget_agent(old.id)
            if self.egress is not None:
                self.egress.forget(old.id)
        # Every other service that keeps something per agent id lets it go at the same moment.
        ids = [old.id for old in forgotten]
        for service in self.kernel.services.values():
            forget = getattr(service, "forget_agents", None)
            if forget is not None:
                forget(ids)

    def _registries(self) -> dict[str, dict[str, int]]:
        """How many entries each per-agent registry holds, by service: every one is bounded by
        the running agents and the ``keep_ended`` ended ones (LIST ``include: registries``)."""
        sizes = {"processes": {**self.table.sizes(), "usage": len(self.usage), "launching": len(self._launching)},
                 "kernel": {"agent_connections": self.kernel.connected_agents()}}
        for name, service in self.kernel.services.items():
            report = getattr(service, "registry_sizes", None)
            if report is not None:
                sizes[name] = dict(report())
        return sizes

    def _cgroup_move(self, cgroup: AgentCgroup) -> Callable[[int], None]:
        """A local agent's ``before_exec``, in the launch's thread as soon as the child exists:
        its cgroup made (once: a launch tried again moves its child into the same one), then
        the child moved in, both while the child builds its view."""
        made = False

        def move(pid: int) -> None:
            nonlocal made
            if not made and self.spares.adopt(pid, cgroup):
                made = True  # an embryo already in a spare cgroup, now the agent's (spares.py)
                return
            if not made:
                try:
                    self.driver.make(cgroup)
                except OSError as exc:
                    raise Unavailable(f"cannot create the agent's cgroup: {exc}", driver=self.driver.name) from None
                made = True
            cgroup.attach(pid)
            self.spares.release(pid)
        return move

    def _abandon(self, cgroup: AgentCgroup, capture: LogCapture, kernel_end: socket.socket | None,
                 workspace: Workspace | None, agent_id: str) -> None:
        """Undo a SPAWN whose process never started."""
        if kernel_end is not None:
            kernel_end.close()
        capture.close()
        capture.path.unlink(missing_ok=True)
        self._spawn_background(self._remove_cgroup(cgroup))
        if workspace is not None:
            self._spawn_background(self._remove_workspace(workspace.agent_id))
        if self.volume_store.held(agent_id):
            self._spawn_background(self._detach_volumes(agent_id))

    async def _detach_volumes(self, agent_id: str) -> None:
        await self.kernel.loop.run_in_executor(None, self.volume_store.detach, agent_id)

    async def _remove_workspace(self, agent_id: str) -> None:
        await self.kernel.loop.run_in_executor(None, self.workspaces.remove, agent_id)

    async def _remove_cgroup(self, cgroup: AgentCgroup) -> None:
        await destroy(cgroup, executor=self._teardown)

    def _start_done(self, task: asyncio.Task[_Started]) -> None:
        self._starting.discard(task)
        # Retrieved here too: a caller that hung up no longer awaits the failure.
        if not task.cancelled() and task.exception() is not None:
            log.debug("SPAWN failed: %s", task.exception())

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.kernel.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("process supervision task failed", exc_info=task.exception())

    def _isolation(self, cgroup: AgentCgroup, sandbox: Mapping[str, Any], request: SpawnRequest,
                   workspace: Workspace | None, volumes: Sequence[Attached]) -> dict[str, Any]:
        not_enforced = sorted(name for name, ok in cgroup.enforced.items() if not ok)
        degraded = [f"limits.{name}" + (" (default)" if name in request.default_limits else "")
                    for name in not_enforced]
        degraded += list(sandbox.get("degraded", []))
        if workspace is not None:
            degraded += self.workspaces.degraded(workspace)
        for volume in volumes:
            degraded += self.volume_store.degraded(volume)
        return {
            "cgroup": {"driver": self.driver.name, "layout": self.layout.kind,
                       "enforced": sorted(name for name, ok in cgroup.enforced.items() if ok),
                       "not_enforced": not_enforced, "tracks_tree": cgroup.tracks_tree,
                       "pause": self.driver.freezer,
                       **({"reason": self.driver.reason}
                          if isinstance(self.driver, NoDriver) else {})},
            "sandbox": dict(sandbox),
            **({"workspace": workspace.report()} if workspace is not None else {}),
            **({"volumes": [v.report() for v in volumes]} if volumes else {}),
            "degraded": degraded,
        }

    def _cgroup_situation(self) -> str:
        if isinstance(self.driver, NoDriver):
            return f"no cgroups: {self.driver.reason}"
        return (f"the {self.driver.name} cgroup driver enforces only "
                f"{sorted(self.driver.enforceable) or 'nothing'}")

    @property
    def _agent_uid(self) -> int | None:
        """The host uid sandboxed agents run as: a root kernel's dedicated one, else the kernel's."""
        return self.settings.agent_uid if os.geteuid() == 0 else None

    @functools.cached_property
    def _system_view(self) -> tuple[str, ...]:
        """Host paths every sandboxed agent sees read-only (the system dirs, this Python)."""
        return tuple(op.dest for op in default_system_ops() if op.kind == "bind")

    def agent_of_peer(self, pid: int, pidfd: int | None) -> str | None:
        """The running agent process ``pid`` belongs to (for connections made by path); raises
        ``PeerGone`` if the process is no longer the one that connected."""
        return agent_of_pid(pid, AnyOf(self.table.running_ids(), self._launching), self.table.running_pids(),
                            pidfd)

    def _place(self, agent_id: str, request: SpawnRequest, wire: SpawnRequestWire,
               parent: Agent | None) -> RemoteAgent | None:
        """The node ``request`` runs on, through the cluster service; None: here. A placed agent's
        children run on the cluster too (each placed on its own), as their spawner does."""
        cluster = self.cluster
        if cluster is None:
            if isinstance(wire.placement, PlacementWire):
                log.info("agent %s: placement ignored, this kernel drives no cluster (agentos kernel --cluster)",
                         request.name)
            return None
        inherited = parent.remote.placement if parent is not None and parent.remote is not None else None
        return cluster.place(agent_id, request, wire, inherited)



def _reap_own_children() -> None:
    """Agents are signalled by pid, safe only while nobody but the kernel reaps them (an unreaped
    child's pid is its own). A SIGCHLD the kernel inherited as ignored would have the host reap
    them as they exit, and their pids reused: it gets the default again."""
    if signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN:
        return
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except ValueError:  # not the main thread: the embedding program must not ignore SIGCHLD
        log.error("SIGCHLD is ignored in this process, so agents are reaped as they exit and their "
                  "pids may be reused: start the kernel with SIGCHLD at its default")


def _release(pid: int) -> None:
    """Reap the kernel's child ``pid``, whose end was read already (WNOWAIT)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | _WALL)
    except ChildProcessError:
        log.error("pid %d was reaped by someone else", pid)


def _spec(agent: Agent) -> dict[str, Any]:
    """What the agent was spawned with (LIST's ``spec``: its spawner and admins only, for env
    values): how ``agentos up`` tells a team's agent from a changed one."""
    return {k: v for k, v in agent.request.fields().items() if k not in ("name", "project")}
