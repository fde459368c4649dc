"""The Ray actors that run agents on their nodes, through each node's own sandbox and cgroups,
and carry each agent's kernel connection and output to the kernel: ``AgentHost`` runs one agent
(``cluster.hosts: agent``), ``NodeHost`` every agent of one kernel on its node (``node``, the
density mode); ``HostedAgent`` is one agent either way.

The kernel drives them (``launch``, then ``pull`` in a loop and ``push`` per reply): every byte
the agent writes to its kernel connection (fd 3, as on one host) comes back as the answer to a
``pull`` the kernel issued for that agent. The kernel never takes an agent id from a host: a
frame is the agent's because it answered the kernel's own call for the agent it placed there
(on its own actor, or by its id on its node's), so a host can speak only for agents the kernel
put on it. This module imports Ray nowhere: the kernel wraps the classes with ``ray.remote``
(``backend.py``), and the nodes import them by name.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import os
import signal
import socket
from typing import Any

from ..cgroups import (
    AgentCgroup,
    CgroupDriver,
    CgroupStats,
    NoDriver,
    destroy,
    detect,
    freeze,
    open_driver,
    remove_stale,
    thaw,
)
from ..processes.launcher import start_process
from ..processes.request import SpawnRequest
from ..sandbox import Launcher, SandboxError
from ..sandbox.spec import Launched, reap
from .settings import LaunchSettings

#: Bytes of the agent's kernel connection buffered here while the kernel does not pull: past
#: this the agent is not read (it blocks in its own write), as the kernel's reactor does.
HIGH_WATER = 4 * 1024 * 1024
#: Agent ids a ``NodeHost`` remembers as dropped (each a few dozen bytes): a launch that Ray runs
#: after its drop is refused.
DROPS_KEPT = 4096
_READ = 256 * 1024


def ray_secrets(temp_dir: str) -> list[str]:
    """This node's Ray paths no agent may see, whatever it binds: the cluster's token (with it, a
    process that reaches Ray's ports could drive the cluster) and Ray's temp dir ``temp_dir`` (its
    sockets)."""
    paths = [os.path.expanduser("~/.ray"), temp_dir]
    token = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token:
        paths.append(token)
    return [os.path.abspath(p) for p in paths]


class LaunchRefused(Exception):
    """The agent cannot start on this node (its sandbox or its limits); the message says why."""


class NodeRuntime:
    """What a host on a node starts once and its agents share: the sandbox launcher (its zygote)
    and a cgroup driver instance of its own."""

    def __init__(self) -> None:
        self.launcher: Launcher | None = None
        self.driver: CgroupDriver = NoDriver("not started")
        #: This node as a launch reports it (its id, address, labels, this host's pid).
        self.node: dict[str, Any] = {}
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Once, however many launches ask at the same time (again after a start that failed)."""
        async with self._starting:
            if self.launcher is None:
                await self._start()

    async def _start(self) -> None:
        import ray  # on a node Ray is there: this runs inside a Ray worker

        node_id = ray.get_runtime_context().get_node_id()
        labels: dict[str, str] = next((n.get("Labels", {}) for n in ray.nodes() if n["NodeID"] == node_id), {})
        self.node = {"id": node_id, "ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                     "labels": {k: v for k, v in labels.items() if not k.startswith("ray.io/")},
                     "actor_pid": os.getpid()}
        loop = asyncio.get_running_loop()
        launcher = Launcher()
        await loop.run_in_executor(None, launcher.start)
        try:
            driver = open_driver(detect())
            try:
                stale = driver.start()
            except OSError as exc:
                self.driver = NoDriver(f"cannot create cgroups under {[str(r) for r in driver.roots]}: {exc}")
            else:
                await remove_stale(driver, stale)
                self.driver = driver
        except BaseException:
            await loop.run_in_executor(None, launcher.close)
            raise
        # Last: a start that failed is started again by the next launch.
        self.launcher = launcher

    async def close(self) -> None:
        if self.launcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.launcher.close)
            self.launcher = None
        self.driver.stop()

    def situation(self) -> str:
        if isinstance(self.driver, NoDriver):
            return f"no cgroups: {self.driver.reason}"
        return f"the {self.driver.name} cgroup driver enforces only {sorted(self.driver.enforceable) or 'nothing'}"

    def cgroup_report(self, cgroup: AgentCgroup) -> dict[str, Any]:
        enforced = cgroup.enforced
        return {"driver": self.driver.name, "layout": detect().kind,
                "enforced": sorted(name for name, ok in enforced.items() if ok),
                "not_enforced": sorted(name for name, ok in enforced.items() if not ok),
                "tracks_tree": cgroup.tracks_tree, "pause": self.driver.freezer,
                **({"reason": self.driver.reason} if isinstance(self.driver, NoDriver) else {})}


class HostedAgent:
    """One agent on a node: its sandbox, its cgroup, and the two streams the kernel pulls."""

    def __init__(self, runtime: NodeRuntime, agent_id: str) -> None:
        self._runtime = runtime
        self.agent_id = agent_id
        self._cgroup: AgentCgroup | None = None
        self._launched: Launched | None = None
        self._sock: socket.socket | None = None
        self._output = -1
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._buffered = 0
        self._wake = asyncio.Event()
        #: The kernel's bytes for the agent: pieces come numbered (``push``), are put in order
        #: here, and wait in ``_outbox`` until the agent's socket takes them.
        self._pieces: dict[int, bytes] = {}
        self._next_piece = 0
        self._outbox = bytearray()
        #: Bytes put in order and not yet written to the agent (what ``push`` keeps bounded).
        self._unsent = 0
        #: Set at each change a waiting ``push`` may wait for.
        self._progress = asyncio.Event()
        self._writing = False
        self._close_after_write = False
        #: The agent closed its end of the connection: nothing more to read from it.
        self._agent_closed = False
        #: Its output is not read until the kernel pulls (past ``HIGH_WATER`` waiting for it).
        self._output_paused = False
        self._ended = False
        #: Its cgroup is gone and its end reported.
        self.finished = asyncio.get_running_loop().create_future()

    @property
    def launched(self) -> bool:
        return self._launched is not None

    async def launch(self, request: SpawnRequest, settings: LaunchSettings) -> dict[str, Any]:
        """Start the agent in a sandbox and cgroup of this node; answers its pid, isolation and node."""
        import ray  # on a node Ray is there: this runs inside a Ray worker

        loop = asyncio.get_running_loop()
        runtime = self._runtime
        assert runtime.launcher is not None
        missing = [name for name in request.limits.requested()
                   if name not in runtime.driver.enforceable and name not in request.default_limits]
        if missing and not request.allow_degraded:
            raise LaunchRefused(f"limits {missing} cannot be enforced on this node ({runtime.situation()}); "
                                "set allow_degraded to run the agent without them")
        try:
            self._cgroup = runtime.driver.create(self.agent_id, request.limits)
        except OSError as exc:
            raise LaunchRefused(f"cannot create the agent's cgroup on this node: {exc}") from None
        context = ray.get_runtime_context()
        host_end, agent_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_output, write_output = os.pipe2(os.O_CLOEXEC)
        start = functools.partial(start_process, runtime.launcher, request, self.agent_id, output_fd=write_output,
                                  kernel_fd=agent_end.fileno(), before_exec=self._cgroup.attach,
                                  passed_env=settings.passed_env,
                                  masked_paths=[*settings.masked_paths, *ray_secrets(context.get_temp_dir())],
                                  tmp_size=request.tmp_size, agent_uid=settings.agent_uid)
        try:
            self._launched = await loop.run_in_executor(None, start)
        except SandboxError as exc:
            host_end.close()
            os.close(read_output)
            await destroy(self._cgroup)
            raise LaunchRefused(str(exc)) from None
        finally:
            agent_end.close()
            os.close(write_output)
        self._sock, self._output = host_end, read_output
        host_end.setblocking(False)
        os.set_blocking(read_output, False)
        loop.add_reader(host_end.fileno(), self._read_agent)
        loop.add_reader(read_output, self._read_output)
        loop.add_reader(self._launched.pidfd, self._on_exit)
        return {"pid": self._launched.pid, "steps": self._launched.steps,
                "sandbox": self._launched.isolation, "cgroup": runtime.cgroup_report(self._cgroup),
                "enforced": dict(self._cgroup.enforced), "tracks_tree": self._cgroup.tracks_tree,
                "node": dict(runtime.node)}

    async def pull(self) -> list[tuple[Any, ...]]:
        """The next events, waiting for one: ``("in", bytes)`` from the agent's connection (``b""``:
        it closed), ``("out", bytes)`` of its output, and last ``("end", exit code, signal, stats)``."""
        while not self._events:
            self._wake.clear()
            await self._wake.wait()
        events = list(self._events)
        self._events.clear()
        loop = asyncio.get_running_loop()
        if self._buffered > HIGH_WATER and self._sock is not None and not self._agent_closed and not self._ended:
            loop.add_reader(self._sock.fileno(), self._read_agent)
        if self._output_paused and not self._ended:
            self._output_paused = False
            loop.add_reader(self._output, self._read_output)
        self._buffered = 0
        return events

    async def push(self, piece: int, data: bytes, poll: bool = False) -> list[tuple[Any, ...]]:
        """The ``piece``-th bytes from the kernel for the agent (``b""``: the kernel closed the
        connection). Ray does not run an async actor's calls in the order one caller made them
        (a large argument is fetched first), so pieces are put back in order here. Answers once
        this piece is in order and what waits for the agent is under ``HIGH_WATER``: the kernel
        awaits that before it reads more for an agent that does not read (its backpressure).

        With ``poll`` it answers as ``pull`` does instead: a reply that carries the kernel's next
        pull, so that an agent's next request after it costs no call of its own (one Ray round
        trip per syscall, not a push and a pull)."""
        self._pieces[piece] = data
        while self._next_piece in self._pieces:
            chunk = self._pieces.pop(self._next_piece)
            self._next_piece += 1
            if not chunk:
                self._close_after_write = True
            self._outbox += chunk
            self._unsent += len(chunk)
        if self._sock is not None and not self._writing and self._outbox:
            # Most replies fit the socket's buffer: sent now, not a loop round later.
            try:
                sent = self._sock.send(self._outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = len(self._outbox)  # the agent is gone: its end arrives through its pidfd
            del self._outbox[:sent]
            self._unsent -= sent
        if self._sock is not None and not self._writing and (self._outbox or self._close_after_write):
            self._writing = True
            asyncio.get_running_loop().create_task(self._write())
        if poll:
            return await self.pull()
        while not (self._ended or self._sock is None
                   or (piece < self._next_piece and self._unsent <= HIGH_WATER)):
            self._progress.clear()
            await self._progress.wait()
        return []

    def signal(self, sig: int) -> None:
        """Signal the agent's tree: the main process, then everything in its cgroup."""
        if self._launched is None or self._ended:
            return
        if sig == signal.SIGKILL and self._cgroup is not None and self._cgroup.tracks_tree:
            self._cgroup.kill()
        try:
            signal.pidfd_send_signal(self._launched.pidfd, sig)
        except ProcessLookupError:
            return
        if self._cgroup is not None and self._cgroup.tracks_tree:
            for pid in self._cgroup.procs():
                if pid != self._launched.pid:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass

    def stats(self) -> CgroupStats:
        return self._cgroup.stats() if self._cgroup is not None else CgroupStats()

    async def freeze(self) -> None:
        """PAUSE: its own processes frozen, answered once they all are (``CgroupError`` if they
        cannot be, with them thawed again), as the kernel freezes a local agent."""
        if self._cgroup is not None and not self._ended:
            await freeze([self._cgroup])

    def thaw(self) -> None:
        if self._cgroup is not None and not self._ended:
            thaw([self._cgroup])

    # -- this node's side ---------------------------------------------------------------

    def _emit(self, *event: Any) -> None:
        self._events.append(event)
        self._wake.set()

    def _read_agent(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        loop = asyncio.get_running_loop()
        if not data:
            self._agent_closed = True
            loop.remove_reader(self._sock.fileno())
        self._emit("in", data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            loop.remove_reader(self._sock.fileno())

    def _read_output(self) -> None:
        try:
            data = os.read(self._output, _READ)
        except BlockingIOError:
            return
        loop = asyncio.get_running_loop()
        if not data:
            loop.remove_reader(self._output)
            return
        self._emit("out", data)
        # Output counts toward what waits for the kernel's pull, as the connection's bytes do.
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            loop.remove_reader(self._output)
            self._output_paused = True

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._outbox and self._sock is not None:
                data = bytes(self._outbox)
                self._outbox.clear()
                await loop.sock_sendall(self._sock, data)
                self._unsent -= len(data)
                self._progress.set()
            if self._close_after_write and self._sock is not None:
                self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            # The agent is gone (its end arrives through its pidfd): nothing will be written.
            self._outbox.clear()
            self._unsent = 0
        finally:
            self._writing = False
            self._progress.set()

    def _on_exit(self) -> None:
        assert self._launched is not None
        ending = reap(self._launched.pidfd)
        if ending is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._launched.pidfd)
        os.close(self._launched.pidfd)
        self._launched.pidfd = -1
        loop.create_task(self._finish(ending.exit_code, ending.signal))

    async def _finish(self, exit_code: int | None, sig: int | None) -> None:
        """What is left of the tree is killed, the last counters read, the cgroup removed, then the end."""
        self._ended = True
        assert self._cgroup is not None
        final = CgroupStats()

        def snapshot() -> None:
            nonlocal final
            assert self._cgroup is not None
            final = dataclasses.replace(self._cgroup.stats(), pids_current=0)

        if self._cgroup.tracks_tree:
            await destroy(self._cgroup, on_empty=snapshot)
        else:
            snapshot()
        # The output's writers are dead now: what they wrote is read to its end.
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._output)
        while True:
            try:
                data = os.read(self._output, _READ)
            except BlockingIOError:
                break
            if not data:
                break
            self._emit("out", data)
        os.close(self._output)
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
        self._emit("end", exit_code, sig, final)
        self._progress.set()
        self.finished.set_result(None)

    def close(self) -> None:
        """After its end was pulled: its connection goes."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._progress.set()


class AgentHost:
    """The actor of one agent (``cluster.hosts: agent``): a Ray worker process, its zygote and
    cgroup driver instance, all for that agent; the agent dies with it."""

    def __init__(self) -> None:
        self._runtime = NodeRuntime()
        self._agent: HostedAgent | None = None

    async def launch(self, request: SpawnRequest, agent_id: str, settings: LaunchSettings) -> dict[str, Any]:
        await self._runtime.start()
        self._agent = HostedAgent(self._runtime, agent_id)
        return await self._agent.launch(request, settings)

    async def pull(self) -> list[tuple[Any, ...]]:
        assert self._agent is not None
        return await self._agent.pull()

    async def push(self, piece: int, data: bytes, poll: bool = False) -> list[tuple[Any, ...]]:
        assert self._agent is not None
        return await self._agent.push(piece, data, poll)

    def signal(self, sig: int) -> None:
        if self._agent is not None:
            self._agent.signal(sig)

    def stats(self) -> CgroupStats:
        return self._agent.stats() if self._agent is not None else CgroupStats()

    async def freeze(self) -> None:
        if self._agent is not None:
            await self._agent.freeze()

    def thaw(self) -> None:
        if self._agent is not None:
            self._agent.thaw()

    async def close(self) -> None:
        """After the end: the launcher's zygote and this actor's cgroup instance go."""
        if self._agent is not None:
            self._agent.close()
        await self._runtime.close()


class NodeHost:
    """The actor that runs every agent of one kernel on its node (``cluster.hosts: node``, the
    density mode): one Ray worker process, one zygote and one cgroup driver instance for all of
    them, each agent kept by its id. What each agent reserves is a placement group's bundle the
    kernel holds; this actor reserves nothing."""

    def __init__(self) -> None:
        self._runtime = NodeRuntime()
        self._agents: dict[str, HostedAgent] = {}
        #: Agents the kernel dropped before their launch ended, or before it came at all (Ray
        #: may run a drop before the launch the kernel made first): the last ``DROPS_KEPT``.
        self._dropped: dict[str, None] = {}

    async def launch(self, request: SpawnRequest, agent_id: str, settings: LaunchSettings) -> dict[str, Any]:
        if agent_id in self._agents:
            raise LaunchRefused(f"agent {agent_id} already runs on this node")
        # Known from the start, so that a drop while this host still starts its zygote is kept.
        agent = self._agents[agent_id] = HostedAgent(self._runtime, agent_id)
        try:
            await self._runtime.start()
            if agent_id in self._dropped:
                raise LaunchRefused(f"agent {agent_id} was dropped before it started")
            reply = await agent.launch(request, settings)
        except BaseException:
            del self._agents[agent_id]
            raise
        if agent_id in self._dropped:
            await self._drop(agent)
        return reply

    async def pull(self, agent_id: str) -> list[tuple[Any, ...]]:
        return await self._agents[agent_id].pull()

    async def push(self, agent_id: str, piece: int, data: bytes, poll: bool = False) -> list[tuple[Any, ...]]:
        agent = self._agents.get(agent_id)
        if agent is None:
            if poll:
                raise KeyError(agent_id)  # as its pull would: the kernel takes it for lost
            return []
        return await agent.push(piece, data, poll)

    def signal(self, agent_id: str, sig: int) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.signal(sig)

    def stats_many(self, agent_ids: list[str]) -> list[CgroupStats]:
        """Each agent's counters (LIST asks for all of a node's agents in one call)."""
        return [agent.stats() if (agent := self._agents.get(agent_id)) is not None else CgroupStats()
                for agent_id in agent_ids]

    async def freeze(self, agent_id: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None:
            await agent.freeze()

    def thaw(self, agent_id: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.thaw()

    def close(self, agent_id: str) -> None:
        """After its end was pulled: the agent is forgotten here."""
        agent = self._agents.pop(agent_id, None)
        if agent is not None:
            agent.close()

    async def drop(self, agent_id: str) -> None:
        """The kernel gave up on the agent (a stopping kernel, a lost bridge): its tree is killed
        and its cgroup removed, as the end of its own host would."""
        agent = self._agents.get(agent_id)
        if agent is not None and agent.launched:
            await self._drop(agent)
            return
        self._dropped[agent_id] = None
        if len(self._dropped) > DROPS_KEPT:
            del self._dropped[next(iter(self._dropped))]

    async def close_node(self) -> None:
        """The kernel stops: the zygote and this host's cgroup instance go (its agents ended first)."""
        await self._runtime.close()

    async def _drop(self, agent: HostedAgent) -> None:
        agent.signal(signal.SIGKILL)
        await agent.finished
        self.close(agent.agent_id)
