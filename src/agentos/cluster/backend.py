"""The kernel's side of a Ray cluster: the ``cluster`` service (the kernel is Ray's driver) and
one ``RemoteAgent`` per agent placed on a node, which bridges that agent's kernel connection
and output between its host on the node (its place on the node's ``NodeHost``, or an
``AgentHost`` of its own) and the kernel's ordinary machinery.

The bridge ends in a socketpair the processes service adopts as the agent's connection, with
the agent's identity, exactly as for a local agent: dispatch, permissions, budgets, the audit
log, backpressure and closing all stay the kernel's own code. Only this module imports Ray.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import ray
from ray.exceptions import ActorUnavailableError, ActorUnschedulableError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from ..cgroups import AgentCgroup, CgroupError, CgroupStats
from ..errors import InvalidArgument, PermissionDenied, Unavailable
from ..kernel.identity import Identity
from ..kernel.syscalls import Handler
from ..processes.request import SpawnRequest
from ..protocol import Op
from ..protocol.lifecycle import Status
from ..protocol.requests import GroupWire, PlacementWire, SpawnRequestWire
from ..sandbox.spec import Launched
from ..units import parse_duration
from . import NAMESPACE
from .host import HIGH_WATER, AgentHost, LaunchRefused, NodeHost
from .settings import ClusterSettings, LaunchSettings

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

log = logging.getLogger("agentos.cluster")

_READ = 256 * 1024
#: Seconds LIST waits for a placed agent's node to report its usage (then it shows the last report).
STATS_WAIT = 1.0
#: Seconds a stopping kernel gives its NodeHosts to close (a lost one is not waited for).
HOST_CLOSE_WAIT = 5.0
#: A host Ray calls unavailable (restarting, or out of reach for a moment) is asked again this
#: often, this many seconds apart, before its agent is taken for lost.
UNAVAILABLE_RETRIES = 10
UNAVAILABLE_PAUSE = 0.5
#: Seconds the bridge waits, after taking a placed agent's bytes, for the kernel's answer to
#: carry its next pull (``HostedAgent.push``'s ``poll``) before it pulls on its own. A pull made
#: at once goes out ahead of the answer and slows it: two Ray calls per syscall where one does.
POLL_LINGER = 0.002
#: The actor classes, declared with Ray once.
_AGENT_HOST = ray.remote(AgentHost)
_NODE_HOST = ray.remote(NodeHost)
#: Calls a ``NodeHost`` runs at once: each agent on it keeps a ``pull`` waiting, so this bounds
#: the agents one node can run for one kernel (Ray's default for an async actor is 1,000).
NODE_HOST_CONCURRENCY = 100_000


class ClusterService:
    """Connects the kernel to a Ray cluster as its driver, and places agents that ask for it."""

    name = "cluster"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        try:
            self.settings = ClusterSettings.from_section(kernel.config.section("cluster"))
        except ValueError as exc:
            raise ValueError(f"kernel configuration: {exc}") from None
        #: Agents waiting for a node, by id (LIST shows them ``pending``, KILL ends them).
        self.pending: dict[str, RemoteAgent] = {}
        self.remotes: set[RemoteAgent] = set()
        #: Placement groups with members, by (spawner's uid, project, name).
        self.groups: dict[tuple[int, str | None, str], Group] = {}
        #: ``cluster.hosts: node``: each node's ``NodeHost``, by node id, made by the first agent
        #: placed there.
        self.node_hosts: dict[str, Any] = {}

    def syscalls(self) -> Mapping[Op, Handler]:
        return {}

    async def start(self) -> None:
        # Ray's init replaces SIGTERM's handler with one that exits the process: the kernel's own
        # (a graceful shutdown, set by the loop) is put back.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        address = self.settings.address
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        log.info("cluster: the kernel drives the Ray cluster at %s (%d nodes alive)", address,
                 len(self.nodes()))

    async def stop(self) -> None:
        # The processes service stopped first and ended every agent; a host still here is one whose
        # end never came back (a node lost mid-shutdown): its actor goes with the driver anyway.
        for remote in list(self.remotes):
            remote.discard()
        # Each NodeHost stops its zygote and removes its cgroup instance before Ray ends it.
        closing = [asyncio.wrap_future(handle.close_node.remote().future()) for handle in self.node_hosts.values()]
        if closing:
            await asyncio.wait(closing, timeout=HOST_CLOSE_WAIT)
        ray.shutdown()

    def capabilities(self) -> Mapping[str, Any]:
        return {"backend": "ray", "address": self.settings.address, "ray": ray.__version__,
                "nodes": self.nodes()}

    @staticmethod
    def nodes() -> list[dict[str, Any]]:
        """The alive nodes: id, address, labels and total resources."""
        return [{"id": n["NodeID"], "ip": n["NodeManagerAddress"],
                 "labels": {k: v for k, v in n.get("Labels", {}).items() if not k.startswith("ray.io/")},
                 "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]

    def place(self, agent_id: str, request: SpawnRequest, wire: SpawnRequestWire,
              parent_placement: PlacementWire | None) -> RemoteAgent | None:
        """The remote agent for a SPAWN that asks for a node (or whose spawner runs on one); None
        when it runs on the kernel's host."""
        if isinstance(wire.placement, PlacementWire):
            placement = wire.placement
            if parent_placement is not None:
                within_parents(placement, parent_placement)
        elif parent_placement is not None:
            # Placed as its spawner is, but not a member of its spawner's group.
            placement = msgspec.structs.replace(parent_placement, group=None)
        else:
            return None
        for field, asked in (("workspace", request.workspace), ("volumes", request.volumes),
                             ("template", request.template)):
            if asked:
                raise Unavailable(f"{field} is not available to an agent placed on a cluster node yet "
                                  "(docs/cluster.md)", field=field)
        timeout = self.settings.placement_timeout
        if isinstance(placement.timeout, (int, float, str)):
            try:
                timeout = parse_duration(placement.timeout, "placement.timeout")
            except ValueError as exc:
                raise InvalidArgument(str(exc), field="placement.timeout") from None
        remote = RemoteAgent(self, agent_id, request, placement, timeout)
        if self.settings.hosts == "node" and not remote.bundle:
            raise InvalidArgument("placement: on a cluster whose agents share their node's host (cluster.hosts "
                                  "node), a placed agent must reserve something for its placement group's bundle: "
                                  "limits.memory, placement.cpus, gpus or resources", field="placement")
        if isinstance(placement.group, GroupWire) and not remote.bundle:
            raise InvalidArgument("placement.group: a member of a group must reserve something for its bundle: "
                                  "limits.memory, placement.cpus, gpus or resources", field="placement.group")
        return remote

    def waiting(self, ref: Mapping[str, Any], project: str | None,
                visible: Callable[[RemoteAgent], bool]) -> RemoteAgent | None:
        """The agent still waiting for a node that KILL's ``ref`` names (by ``id``, or by ``name``
        as ``AgentTable.find`` reads one: ``project/name``, else the caller's ``project``'s, else
        the one in any project); None if none, or not just one, that the caller may see."""
        agent_id, name = ref.get("id"), ref.get("name")
        if agent_id is not None:
            found = [self.pending[agent_id]] if agent_id in self.pending else []
        elif isinstance(name, str):
            wanted, _, bare = name.rpartition("/")
            found = [r for r in self.pending.values() if r.name == bare and (not wanted or r.project == wanted)]
            if not wanted and any(r.project == project for r in found):
                found = [r for r in found if r.project == project]
        else:
            found = []
        found = [r for r in found if visible(r)]
        return found[0] if len(found) == 1 else None

    def node_host(self, node_id: str) -> Any:
        """The ``NodeHost`` on ``node_id`` (started now if none is)."""
        handle = self.node_hosts.get(node_id)
        if handle is None:
            handle = self.node_hosts[node_id] = _NODE_HOST.options(
                namespace=NAMESPACE, num_cpus=0, max_restarts=0, max_concurrency=NODE_HOST_CONCURRENCY,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
        return handle

    def lost_node_host(self, node_id: str, handle: Any) -> None:
        """``handle`` died (its node was lost): the next agent placed there starts another."""
        if self.node_hosts.get(node_id) is handle:
            del self.node_hosts[node_id]

    async def read_stats(self, remotes: Sequence[RemoteAgent]) -> list[CgroupStats]:
        """The placed agents' counters, fresh from their nodes (LIST's usage): one call to each
        ``NodeHost`` for all its agents, one to each ``AgentHost``; the last ones for an agent
        whose host does not answer within ``STATS_WAIT``."""
        batches: dict[int, list[RemoteAgent]] = {}
        for remote in remotes:
            if remote.asked:
                assert remote.host is not None
                key = id(remote.host.handle) if remote.host.node_id is not None else id(remote)
                batches.setdefault(key, []).append(remote)

        async def ask(batch: list[RemoteAgent]) -> None:
            host = batch[0].host
            assert host is not None
            ref = (host.handle.stats_many.remote([r.agent_id for r in batch]) if host.node_id is not None
                   else host.call("stats"))
            try:
                answer = await asyncio.wait_for(asyncio.wrap_future(ref.future()), STATS_WAIT)
            except (RayError, TimeoutError):
                return  # its end (or its node's loss) reaches the agent's bridge
            for remote, fresh in zip(batch, answer if host.node_id is not None else [answer]):
                remote.took_stats(fresh)

        await asyncio.gather(*(ask(batch) for batch in batches.values()))
        return [remote.cgroup.last for remote in remotes]

    def end_pending(self) -> None:
        """The kernel stops: agents still waiting for a node end now, not at their timeout."""
        for remote in list(self.pending.values()):
            remote.kill_pending()

    def join(self, remote: RemoteAgent, wire: GroupWire, key: tuple[int, str | None, str]) -> tuple[Group, int]:
        """A bundle of the group ``wire`` names for ``remote``: the group is made (its bundles
        reserved) by its first member, and every member must ask for the same."""
        strategy = wire.strategy if isinstance(wire.strategy, str) else "pack"
        labels = dict(remote.placement.labels or {})
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, strategy, wire.size, remote.bundle, labels)
        asked = (strategy, wire.size, remote.bundle, labels)
        if asked != group.shape:
            raise InvalidArgument(f"placement.group: group {wire.name!r} is {group.describe()}; this agent asks "
                                  f"for {Group.describe_shape(*asked)}: every member must ask for the same",
                                  field="placement.group")
        index = group.join(remote.agent_id)
        if index is None:
            raise Unavailable(f"group {wire.name!r} is full: its {group.size} members run or wait for a node "
                              f"({', '.join(sorted(group.members.values()))})", field="placement.group")
        return group, index

    def leave(self, group: Group, agent_id: str) -> None:
        """``agent_id`` ended: its bundle is free; the last member's end removes the group."""
        group.leave(agent_id)
        if not group.members and self.groups.get(group.key) is group:
            del self.groups[group.key]
            remove_placement_group(group.handle)


def within_parents(child: PlacementWire, parent: PlacementWire) -> None:
    """A placed agent's child may narrow where it runs and what it reserves, never widen it: its
    labels keep every one of its parent's, and its GPUs, CPUs and resources are at most the
    parent's (``PermissionDenied`` naming the field otherwise)."""
    parents_labels = parent.labels if isinstance(parent.labels, dict) else {}
    labels = child.labels if isinstance(child.labels, dict) else {}
    for key, value in parents_labels.items():
        if labels.get(key) != value:
            raise PermissionDenied(f"placement.labels: the spawner runs on nodes labelled {key}={value}, and so must "
                                   f"its children (asked: {labels.get(key)!r})", field="placement.labels")
    for field in ("gpus", "cpus"):
        asked, held = getattr(child, field), getattr(parent, field)
        if isinstance(asked, (int, float)) and asked > (held if isinstance(held, (int, float)) else 0):
            raise PermissionDenied(f"placement.{field}: {asked:g} is more than the spawner's {held or 0:g}",
                                   field=f"placement.{field}")
    parents_resources = parent.resources if isinstance(parent.resources, dict) else {}
    for name, amount in (child.resources if isinstance(child.resources, dict) else {}).items():
        if amount > parents_resources.get(name, 0):
            raise PermissionDenied(f"placement.resources: {name} {amount:g} is more than the spawner's "
                                   f"{parents_resources.get(name, 0):g}", field="placement.resources")


def actor_options(agent_id: str, request: SpawnRequest, placement: PlacementWire) -> dict[str, Any]:
    """Ray's options for an agent's host: its name, what it reserves, where it may run."""
    options: dict[str, Any] = {"name": agent_id, "namespace": NAMESPACE, "max_restarts": 0,
                               "num_cpus": placement.cpus or 0}
    if request.limits.memory is not None:
        # Admission only (Ray does not enforce it); the agent's cgroup on its node does.
        options["memory"] = request.limits.memory
    if placement.gpus:
        options["num_gpus"] = placement.gpus
    if placement.resources:
        options["resources"] = dict(placement.resources)
    if placement.labels:
        options["label_selector"] = dict(placement.labels)
    return options


#: Ray's name for each strategy of ``placement.group``.
_STRATEGIES = {"pack": "PACK", "spread": "SPREAD", "strict-pack": "STRICT_PACK", "strict-spread": "STRICT_SPREAD"}


class Group:
    """A placement group (``placement.group``): one Ray bundle per member, all reserved when its first
    member is placed, on nodes its strategy picks; each member's host runs in its own bundle."""

    def __init__(self, key: tuple[int, str | None, str], strategy: str, size: int, bundle: dict[str, float],
                 labels: dict[str, str]) -> None:
        #: (its members' spawner's uid, their project, its name): groups of others never mix.
        self.key = key
        self.name = key[2]
        self.shape = (strategy, size, bundle, labels)
        self.size = size
        #: Bundle index -> the member (agent id) that holds it, running or waiting for a node.
        self.members: dict[int, str] = {}
        self.handle: PlacementGroup = placement_group(
            [dict(bundle)] * size, strategy=_STRATEGIES[strategy],
            bundle_label_selector=[dict(labels)] * size if labels else None)

    def join(self, agent_id: str) -> int | None:
        """The first free bundle, now ``agent_id``'s; None when every bundle is held."""
        index = next((i for i in range(self.size) if i not in self.members), None)
        if index is not None:
            self.members[index] = agent_id
        return index

    def leave(self, agent_id: str) -> None:
        for index, member in list(self.members.items()):
            if member == agent_id:
                del self.members[index]

    def describe(self) -> str:
        return self.describe_shape(*self.shape)

    @staticmethod
    def describe_shape(strategy: str, size: int, bundle: Mapping[str, float], labels: Mapping[str, str]) -> str:
        wanted = ", ".join(f"{k} {_amount(k, v)}" for k, v in bundle.items())
        return (f"{strategy} of {size} member(s) each reserving {wanted}"
                + (f" on nodes labelled {', '.join(f'{k}={v}' for k, v in labels.items())}" if labels else ""))

    def why_pending(self, nodes: list[dict[str, Any]]) -> str:
        """Why Ray has not placed the group yet, judged on the alive nodes' totals."""
        strategy, size, bundle, labels = self.shape
        fit = [node for node in nodes if all(node["labels"].get(k) == v for k, v in labels.items())
               and all(node["resources"].get(k, 0) >= v for k, v in bundle.items())]
        whole = [node for node in fit if all(node["resources"].get(k, 0) >= v * size for k, v in bundle.items())]
        if strategy == "strict-spread":
            need = f"{size} nodes that each hold a member; {len(fit)} can"
        elif strategy == "strict-pack":
            need = f"one node that holds all {size} members; {len(whole)} can"
        else:
            need = f"room for {size} members; {len(fit)} node(s) can hold one"
        return f"waiting for group {self.name!r} ({self.describe()}) to be placed: it needs {need}"


def why_pending(options: Mapping[str, Any], nodes: list[dict[str, Any]]) -> str:
    """What no alive node offers: each node's first shortfall, in words."""
    needs = {"CPU": options.get("num_cpus") or 0, "GPU": options.get("num_gpus") or 0,
             "memory": options.get("memory") or 0, **options.get("resources", {})}
    labels = options.get("label_selector", {})
    reasons = []
    for node in nodes:
        wrong = {k: node["labels"].get(k) for k, v in labels.items() if node["labels"].get(k) != v}
        if wrong:
            reasons.append(f"node {node['id'][:8]} has labels {wrong}")
            continue
        short = [f"{name} {_amount(name, amount)} (it has {_amount(name, node['resources'].get(name, 0))})"
                 for name, amount in needs.items() if amount and node["resources"].get(name, 0) < amount]
        reasons.append(f"node {node['id'][:8]} " + (f"lacks {', '.join(short)}" if short
                                                       else "has room but is busy"))
    wanted = ", ".join([f"{k} {_amount(k, v)}" for k, v in needs.items() if v]
                       + [f"label {k}={v}" for k, v in labels.items()])
    return f"waiting for a node with {wanted or 'room'}: " + ("; ".join(reasons) or "no node is alive")


def _amount(resource: str, amount: float) -> str:
    return f"{amount / 2**30:.1f}Gi" if resource == "memory" else f"{amount:g}"


class HostLink:
    """An agent's host as the kernel calls it: an ``AgentHost`` of its own (``cluster.hosts:
    agent``; the agent dies with it), or its place on its node's ``NodeHost`` (``node``: every
    call names the agent, and killing it ends that agent only)."""

    def __init__(self, handle: Any, agent_id: str, node_id: str | None = None) -> None:
        self.handle = handle
        self.agent_id = agent_id
        #: Where its ``NodeHost`` runs; None for an ``AgentHost``.
        self.node_id = node_id
        self._args = () if node_id is None else (agent_id,)

    @property
    def kind(self) -> str:
        return "agent" if self.node_id is None else "node"

    def launch(self, request: SpawnRequest, settings: LaunchSettings) -> Any:
        return self.handle.launch.remote(request, self.agent_id, settings)

    def call(self, method: str, *args: Any) -> Any:
        """``method`` of the host for this agent: Ray's reference to its answer."""
        return getattr(self.handle, method).remote(*self._args, *args)

    def kill(self) -> None:
        if self.node_id is None:
            ray.kill(self.handle, no_restart=True)
        else:
            self.call("drop")


class RemoteCgroup(AgentCgroup):
    """A placed agent's cgroup as the kernel sees it: it lives on the node, which kills,
    freezes and measures; here are the last counters the node reported."""

    def __init__(self, agent_id: str, remote: RemoteAgent) -> None:
        super().__init__(agent_id, [], {})
        self._remote = remote
        self.last = CgroupStats()
        #: The node's answers to the freeze and the thaw asked last (each once it is done).
        self._freezing: asyncio.Future[Any] | None = None
        self._thawing: asyncio.Future[Any] | None = None

    def freeze(self) -> None:
        """Asks its node once; ``cgroups.freeze`` calls again while it waits, which adds nothing."""
        if self._freezing is None:
            self._freezing = self._remote.host_call("freeze")

    def frozen(self) -> bool:
        answer = self._freezing
        if answer is None or not answer.done():
            return False
        failure = answer.exception()
        if failure is not None:
            cause = failure.as_instanceof_cause() if isinstance(failure, RayTaskError) else failure
            raise CgroupError(errno.EBUSY, f"its node could not freeze it: {getattr(cause, 'strerror', None) or cause}")
        return True

    def thaw(self) -> None:
        self._freezing = None
        self._thawing = self._remote.host_call("thaw")

    async def thawed(self) -> None:
        if self._thawing is not None:
            await asyncio.wait((self._thawing,))

    def attach(self, pid: int) -> None:
        raise NotImplementedError("a placed agent's cgroup is joined on its node")

    def procs(self) -> list[int]:
        return []

    def _kill_leaf(self) -> int:
        self._remote.signal(signal.SIGKILL)
        return 0

    def stats(self) -> CgroupStats:
        """The last counters its node reported (LIST asks afresh: ``ClusterService.read_stats``)."""
        return self.last

    def oom_kills(self) -> int:
        return self.last.oom_kills or 0


class _Room(asyncio.Protocol):
    """A pipe's writer that tells when its transport has room again (under its high-water mark)."""

    def __init__(self) -> None:
        self._room = asyncio.Event()
        self._room.set()

    def pause_writing(self) -> None:
        self._room.clear()

    def resume_writing(self) -> None:
        self._room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._room.set()

    async def wait(self) -> None:
        await self._room.wait()


class RemoteAgent:
    """One agent on a node: its host there and the bridge to its kernel connection."""

    def __init__(self, service: ClusterService, agent_id: str, request: SpawnRequest,
                 placement: PlacementWire, timeout: float) -> None:
        self.service = service
        self.agent_id = agent_id
        self.name = request.name
        #: What it asked for: its children that ask for nothing are placed the same way.
        self.placement = placement
        self.options = actor_options(agent_id, request, placement)
        #: What it reserves, as a placement group's bundle: Ray refuses one of only zeros.
        self.bundle = {name: amount for name, amount in (
            ("CPU", self.options["num_cpus"]), ("memory", self.options.get("memory", 0)),
            ("GPU", self.options.get("num_gpus", 0)), *self.options.get("resources", {}).items()) if amount}
        #: Its placement group, while it holds a bundle of one.
        self.group: Group | None = None
        #: ``cluster.hosts: node``, not in a group: the placement group of its one bundle.
        self.reservation: PlacementGroup | None = None
        self.timeout = timeout
        self.cgroup = RemoteCgroup(agent_id, self)
        #: Where it runs (its host's ``launch``'s ``node``), and the node's cgroup report.
        self.node: dict[str, Any] = {}
        self.cgroup_report: dict[str, Any] = {}
        self.host: HostLink | None = None
        self._sock: socket.socket | None = None
        self._output: asyncio.WriteTransport | None = None
        self._output_room = _Room()
        self._tasks: list[asyncio.Task[None]] = []
        #: While the bridge lingers before its next pull: the kernel's next bytes for the agent
        #: carry it instead (the future takes that push's reference).
        self._carrier: asyncio.Future[Any] | None = None
        self._ended = False
        #: While it waits for a node: who asked, its project, LIST's row, and KILL's way to end it.
        self.spawner: Identity | None = None
        self.project: str | None = None
        self._pending: dict[str, Any] = {}
        self._killed: asyncio.Future[None] | None = None

    async def launch(self, request: SpawnRequest, *, output_fd: int, kernel_sock: socket.socket,
                     settings: LaunchSettings, spawner: Identity, project: str | None) -> Launched:
        """Wait until a node takes it (``timeout``), then start the agent there."""
        loop = asyncio.get_running_loop()
        options = self.options
        group = self.placement.group
        index = 0
        if isinstance(group, GroupWire):
            self.group, index = self.service.join(self, group, (spawner.uid, project, group.name))
            # Its bundle is where it may run: the group's bundles carry the node labels.
            options = {key: value for key, value in options.items() if key != "label_selector"}
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.group.handle, placement_group_bundle_index=index)
        elif self.service.settings.hosts == "node":
            labels = self.options.get("label_selector")
            # Ray's control-plane calls are round trips to its head: off the loop.
            self.reservation = await loop.run_in_executor(None, functools.partial(
                placement_group, [self.bundle], strategy="PACK", bundle_label_selector=[labels] if labels else None))
        nodes = await loop.run_in_executor(None, self.service.nodes)
        self.spawner, self.project = spawner, project
        self._pending = {
            "id": self.agent_id, "name": self.name, "project": project, "parent": spawner.agent_id,
            "status": Status.PENDING, "started_at": time.time(), "pid": 0, "restarts": 0, "ready": False,
            "usage": {}, "node": None,
            "reason": self.group.why_pending(nodes) if self.group is not None else why_pending(self.options, nodes)}
        self._killed = loop.create_future()
        self.service.pending[self.agent_id] = self
        try:
            if self.service.settings.hosts == "node":
                reply = await self._start_on_node_host(request, settings, index)
            else:
                reply = await self._start_host(request, settings, options)
        except RayTaskError as exc:
            self.discard()
            cause = exc.as_instanceof_cause()
            message = str(cause.args[0]) if isinstance(cause, LaunchRefused) and cause.args else str(exc)
            raise Unavailable(f"cannot start agent {self.name!r} on its node: {message}") from None
        except BaseException:
            self.discard()
            raise
        finally:
            self.service.pending.pop(self.agent_id, None)
        assert self.host is not None
        self.node = {**reply["node"], "host": self.host.kind}
        self.cgroup_report = reply["cgroup"]
        self.cgroup.enforced = reply["enforced"]
        try:
            # Ours from here: the service closes the originals when the launch returns.
            self._sock = socket.socket(fileno=os.dup(kernel_sock.fileno()))
            self._sock.setblocking(False)
            self._output, _ = await loop.connect_write_pipe(lambda: self._output_room,
                                                            os.fdopen(os.dup(output_fd), "wb", 0))
        except BaseException:
            # The agent runs on its node: it must not stay there with no bridge (EMFILE here).
            self.discard()
            raise
        self.service.remotes.add(self)
        # The node's monotonic clock is not ours: its setup steps cannot be placed on our trace.
        return Launched(pid=reply["pid"], pidfd=-1, isolation=reply["sandbox"])

    async def _start_host(self, request: SpawnRequest, settings: LaunchSettings,
                          options: dict[str, Any]) -> dict[str, Any]:
        """``cluster.hosts: agent``: its own host on a node that takes it, and the agent started
        there (``AgentHost.launch``'s reply) within ``timeout``. A host lost before the agent
        started (its node went away while Ray still placed hosts there) is replaced by another,
        placed anew."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            self.host = HostLink(_AGENT_HOST.options(**options).remote(), self.agent_id)
            try:
                return dict(await self._within(self.host.launch(request, settings), deadline))
            except RayActorError as exc:
                self._host_lost(exc)

    async def _start_on_node_host(self, request: SpawnRequest, settings: LaunchSettings,
                                  index: int) -> dict[str, Any]:
        """``cluster.hosts: node``: its bundle reserved (its group's, else a placement group of its
        own), then the agent started by the ``NodeHost`` of the bundle's node, within ``timeout``.
        A ``NodeHost`` lost meanwhile is replaced, on the node Ray then gives the bundle."""
        group = self.group.handle if self.group is not None else self.reservation
        assert group is not None
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            await self._within(group.ready(), deadline)
            table = await asyncio.get_running_loop().run_in_executor(None, placement_group_table, group)
            node_id = table["bundles_to_node_id"][index]
            if not node_id:
                # Ray is placing the bundle again (its node was lost since it was ready).
                await asyncio.sleep(0.05)
                continue
            self.host = HostLink(self.service.node_host(node_id), self.agent_id, node_id)
            try:
                return dict(await self._within(self.host.launch(request, settings), deadline))
            except (RayActorError, ActorUnschedulableError) as exc:
                self._host_lost(exc)

    async def _within(self, ref: Any, deadline: float) -> Any:
        """What Ray answers for ``ref``, unless the agent is killed or ``deadline`` passes first."""
        assert self._killed is not None
        loop = asyncio.get_running_loop()
        answer = asyncio.wrap_future(ref.future())
        try:
            done, _ = await asyncio.wait((answer, self._killed), timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Left unanswered, its host is killed (or told to drop it): what Ray answers then is nobody's.
            answer.cancel()
        reason = self._pending["reason"]
        if self._killed in done:
            raise Unavailable(f"agent {self.name!r} was killed while it waited for a node ({reason})",
                              pending=True, status=Status.KILLED, id=self.agent_id)
        if not done:
            raise Unavailable(f"agent {self.name!r} found no node within {self.timeout:g}s ({reason})",
                              pending=True, reason=reason)
        return answer.result()

    def _host_lost(self, exc: RayError) -> None:
        assert self.host is not None
        log.warning("agent %s (%s): its host was lost before the agent started (%s); placing another",
                    self.name, self.agent_id, str(exc).splitlines()[0])
        if isinstance(exc, ActorUnavailableError):
            # It may be back and may have started the agent: it drops it, whenever it can.
            assert self.host is not None
            self.host.kill()
        self._forget_host()

    def _forget_host(self) -> None:
        """Its host died: an ``AgentHost`` is killed for good, a ``NodeHost`` replaced for the
        next agent placed on its node."""
        assert self.host is not None
        if self.host.node_id is None:
            self.host.kill()
        else:
            self.service.lost_node_host(self.host.node_id, self.host.handle)

    def pending_row(self) -> dict[str, Any]:
        """What LIST shows of it while it waits for a node."""
        return dict(self._pending)

    def kill_pending(self) -> dict[str, Any]:
        """KILL while it waits for a node: its SPAWN fails (``details.status`` killed), nothing of it
        stays on the cluster; answers it as KILL answers an agent it ended."""
        assert self._killed is not None
        if not self._killed.done():
            self._killed.set_result(None)
        return {**self._pending, "status": Status.KILLED, "reason": "kill", "ended_at": time.time(),
                "killed": True}

    def watch(self, on_end: Callable[[int | None, int | None], None]) -> None:
        """Start the bridge; ``on_end(exit_code, signal)`` once the agent ended or its node was lost."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pull(on_end)), loop.create_task(self._push())]

    def signal(self, sig: int) -> None:
        if not self._ended and self.host is not None:
            self.host.call("signal", sig)

    def host_call(self, method: str) -> asyncio.Future[Any]:
        """``method`` of its host for it, as a future of this loop's, which no one has to await
        (its failure is the caller's to read, or nobody's); once the agent ended, one failed."""
        if self._ended or self.host is None:
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            answer.set_exception(CgroupError(errno.ESRCH, f"agent {self.name!r} has ended"))
        else:
            answer = asyncio.wrap_future(self.host.call(method).future())
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        return answer

    @property
    def asked(self) -> bool:
        """Whether its host can be asked for its counters (it runs, as far as the kernel knows)."""
        return not self._ended and self.host is not None

    def took_stats(self, fresh: CgroupStats) -> None:
        """Counters its node answered; not after its end: the end's are the last (and a host
        answers none for an agent it no longer runs)."""
        if not self._ended:
            self.cgroup.last = fresh

    def discard(self) -> None:
        """Kill the agent (with its own host, or on its node's) and close the bridge; its bundle is free."""
        self._ended = True
        for task in self._tasks:
            task.cancel()
        if self._sock is not None:
            self._sock.close()
        if self._output is not None:
            self._output.close()
        if self.host is not None:
            self.host.kill()
        if self.reservation is not None:
            remove_placement_group(self.reservation)
            self.reservation = None
        if self.group is not None:
            self.service.leave(self.group, self.agent_id)
            self.group = None
        self.service.remotes.discard(self)

    async def _pull(self, on_end: Callable[[int | None, int | None], None]) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None and self._output is not None and self.host is not None
        unavailable = 0
        while True:
            try:
                events = await self._next_pull(loop)
            except ActorUnavailableError:
                # Its host may be back (Ray says the call may or may not have run): ask again,
                # for a while, before taking its agent for lost.
                unavailable += 1
                if unavailable <= UNAVAILABLE_RETRIES:
                    await asyncio.sleep(UNAVAILABLE_PAUSE)
                    continue
                self._lost(on_end, "its host stayed unavailable")
                return
            except RayError as exc:
                self._lost(on_end, str(exc).splitlines()[0])
                return
            unavailable = 0
            for event in events:
                kind = event[0]
                if kind == "in":
                    await self._to_kernel(loop, event[1])
                elif kind == "out":
                    self._output.write(event[1])
                else:
                    self.cgroup.last = event[3]
                    try:
                        await self.host.call("close")
                    except RayError:
                        pass  # the zygote and cgroup instance go with the actor's process anyway
                    self._close(on_end, event[1], event[2])
                    return
            # Its log's writer is behind: the next pull (and so its host's reading) waits for it.
            await self._output_room.wait()

    async def _next_pull(self, loop: asyncio.AbstractEventLoop) -> list[tuple[Any, ...]]:
        """The host's next events: the kernel's next push carries the pull when it comes within
        ``POLL_LINGER`` (``_push``), else a pull of its own is made."""
        carrier = self._carrier = loop.create_future()
        timer = loop.call_later(POLL_LINGER, _settle, carrier, None)
        try:
            ref = await carrier
        finally:
            timer.cancel()
            self._carrier = None
        assert self.host is not None
        return list(await (ref if ref is not None else self.host.call("pull")))

    def _lost(self, on_end: Callable[[int | None, int | None], None], why: str) -> None:
        log.warning("agent %s (%s): its node or host was lost: %s", self.name, self.agent_id, why)
        self.node["lost"] = True
        self._forget_host()
        self._close(on_end, None, signal.SIGKILL)

    async def _to_kernel(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        assert self._sock is not None
        try:
            if data:
                await loop.sock_sendall(self._sock, data)
            else:
                self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the kernel closed the agent's connection: what the agent sends now goes nowhere

    async def _push(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None and self.host is not None
        piece = unanswered = 0
        while True:
            try:
                data = await loop.sock_recv(self._sock, _READ)
            except OSError:
                data = b""
            # Numbered: Ray may run an async actor's calls out of order; the host restores it.
            carrier = self._carrier
            # While the bridge lingers, the answer carries its next pull; not past HIGH_WATER,
            # where the answer is the backpressure's (below).
            poll = carrier is not None and not carrier.done() and bool(data) \
                and unanswered + len(data) <= HIGH_WATER
            answer = self.host.call("push", piece, data, poll)
            if poll:
                assert carrier is not None
                carrier.set_result(answer)
            piece += 1
            unanswered += len(data)
            if unanswered > HIGH_WATER:
                # Its host answers once this is in order and the agent has taken all but
                # HIGH_WATER: an agent that does not read is not read for (the kernel's
                # backpressure on its connection applies, as for a local agent).
                try:
                    await asyncio.wrap_future(answer.future())
                except RayError:
                    return  # its end, or its host's loss, reaches _pull
                unanswered = 0
            if not data:
                return

    def _close(self, on_end: Callable[[int | None, int | None], None], exit_code: int | None,
               sig: int | None) -> None:
        self._tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self.discard()
        on_end(exit_code, sig)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)
