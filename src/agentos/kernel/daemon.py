"""The kernel daemon: one thread, one event loop running on the reactor, a syscall table."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .._extensions import EXTENSIONS_LOADED, load_twin
from .._reactor_common import OUT_OF_FILES, out_of_files
from ..errors import ConnectionClosed, InternalError, NotImplementedSyscall, SyscallError, TooLarge, Unavailable
from ..protocol import DEFAULT_MAX_PAYLOAD, Flag, op_name
from ..protocol.payload import encode_payload
from . import reactor as reactor_py
from .admission import Admission
from .config import KernelConfig
from .events import EventBus
from .heap import HeapTrimmer
from .hooks import Guard, Hooks, Observer
from .identity import Identity
from .loop import ReactorLoop
from .peers import Outsiders, PeerGone, peer_pidfd
from .service import Service
from .slices import in_slices
from .syscalls import Call, SyscallTable

log = logging.getLogger("agentos.kernel")

reactor_mod = load_twin("reactor", reactor_py)

_REPLY = int(Flag.REPLY)
_ERROR_REPLY = int(Flag.REPLY | Flag.ERROR)
_STREAM_CHUNK = int(Flag.REPLY | Flag.STREAM)
_STREAM_END = int(Flag.REPLY | Flag.STREAM | Flag.END)
#: Every syscall's answer once the kernel is shutting down (but NOOP's, which the reactor gives).
_SHUTTING_DOWN = encode_payload(Unavailable("the kernel is shutting down").to_payload())

#: What adds a service to a kernel: called with the kernel, it returns the service (``Kernel(extra_services=...)``).
ServiceFactory = Callable[["Kernel"], Service]
#: ``(peer pid, peer pidfd or None) -> agent id or None``; raises to refuse the connection.
PeerAgent = Callable[[int, "int | None"], "str | None"]


class KernelAlreadyRunning(RuntimeError):
    """Another live kernel serves the socket path."""


def build_services(kernel: Kernel) -> list[Service]:
    """Every subsystem of this kernel, in start order (each adds its syscalls), then the
    kernel's ``extra_services``.

    The one place services are wired: each is built with the others it uses, by type, and
    none looks another up at run time. They are built in the order their collaborators
    exist; the list returned is the order they start in, which is another.
    """
    # Imported here: these pull in the whole kernel, which clients never need.
    from ..audit.service import AuditService
    from ..cgroups import CgroupDriver, Layout, NoDriver, detect, open_driver
    from ..cluster import cluster_service
    from ..egress.service import EgressService
    from ..llm.service import LLMService
    from ..mcp.service import McpService
    from ..messaging.service import MessagingService
    from ..observability.telemetry import TelemetryService
    from ..permissions.service import PermissionService
    from ..processes import ProcessService
    from ..processes.settings import ProcessSettings
    from ..sandbox import Launcher
    from ..sandbox.templates import TemplateSettings
    from ..state.service import StateService
    from ..supervision.service import SupervisorService
    from .core import CoreService

    config = kernel.config
    try:
        templates = TemplateSettings.from_section(config.section("sandbox"))
        process_settings = ProcessSettings.from_section(config.section("processes"))
    except ValueError as exc:
        raise ValueError(f"kernel configuration: {exc}") from None
    if process_settings.cgroups == "none":
        layout = Layout()
        cgroups: CgroupDriver = NoDriver("cgroups are turned off (processes.cgroups: none)")
    else:
        layout = detect()
        cgroups = open_driver(layout)
    permissions = PermissionService(kernel)
    cluster = cluster_service(kernel) if config.section("cluster") else None
    egress = EgressService(kernel)
    state = StateService(kernel, permissions.permissions)
    messaging = MessagingService(kernel, permissions.permissions)
    audit = AuditService(kernel, permissions.permissions)
    llm = LLMService(kernel)
    processes = ProcessService(kernel, settings=process_settings, layout=layout, cgroups=cgroups,
                               permissions=permissions.permissions, launcher=Launcher(templates=templates),
                               llm_registry=llm.callers, project_stores=(messaging, state), cluster=cluster,
                               egress=egress)
    mcp = McpService(kernel, processes, audit.log)
    # The one cycle, closed here: THINK's tool loop is the mcp service's, which runs its servers as
    # agents of the processes service, which tells the LLM gateway of every agent it starts.
    llm.tools = mcp
    return [
        CoreService(kernel),
        # Early: it stops late, so the spans of the other services' last syscalls are exported.
        TelemetryService(kernel, processes.table, llm, messaging),
        permissions,
        # Before processes: agents placed on a node (a restored one too) need the cluster.
        *([cluster] if cluster is not None else []),
        processes,
        SupervisorService(kernel, processes),
        state,
        messaging,
        egress,
        audit,
        llm,
        # After processes (its servers are agents) and audit (it records tool calls and approvals).
        mcp,
        *(add(kernel) for add in kernel.extra_services),
    ]


class Kernel:
    """Owns the socket, the reactor, the services and the syscall table."""

    def __init__(self, config: KernelConfig, extra_services: Sequence[ServiceFactory] = ()) -> None:
        self.config = config
        #: Services beyond the kernel's own, built and started after them (``build_services``).
        self.extra_services = tuple(extra_services)
        self.events = EventBus()
        self.table = SyscallTable()
        self.services: dict[str, Service] = {}
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop
        self._guards: Hooks[Guard] = Hooks()
        self._observers: Hooks[Observer] = Hooks()
        self._when_started: list[Callable[[], Awaitable[None]]] = []
        self._when_stopping: list[Callable[[], None]] = []
        self._tasks: dict[Any, set[asyncio.Task[None]]] = {}
        self._drain_waiters: dict[Any, asyncio.Future[None]] = {}
        #: The largest reply payload each connection declared in HELLO it accepts.
        self._reply_limits: dict[Any, int] = {}
        #: Each agent's open connections: an ending agent's are closed without a walk of all.
        self._agent_conns: dict[str, dict[Any, None]] = {}
        #: What a connection that declared nothing accepts: the protocol's default, which
        #: every peer accepts, unless this kernel is configured for less.
        self._default_reply_limit = min(config.max_payload, DEFAULT_MAX_PAYLOAD)
        self._stopping: asyncio.Event | None = None
        #: What asked the kernel to stop, for the log: a signal's name, else ``stop()``.
        self._stopped_by = "stop()"
        #: Set as shutdown begins: from then on an agent that ends was killed by it, and none restarts.
        self.shutting_down = False
        self.admission = Admission(config.connections)
        self._heap = HeapTrimmer()
        #: Tells which agent a process connecting by path belongs to (the processes service).
        self.peer_agent: PeerAgent | None = None
        self._outsiders = Outsiders()
        self.reactor = reactor_mod.Reactor(
            self._on_frame, self._on_close, self._on_drain,
            max_payload=config.max_payload, high_water=config.write_high_water,
            low_water=config.write_low_water, max_inflight=config.max_inflight)
        self.reactor.on_accept = self._on_accept

    # -- hooks for subsystems ---------------------------------------------------

    def add_guard(self, guard: Guard, ops: Iterable[int] | None = None) -> None:
        """Run ``guard(call)`` before the handler of each syscall in ``ops`` (None: every
        syscall), after the guards added before it; it raises to refuse the call."""
        self._guards.add(guard, ops)

    def add_observer(self, observer: Observer, ops: Iterable[int] | None = None) -> None:
        """Call ``observer(call, outcome, latency_s)`` after each dispatched syscall in ``ops``
        (None: every syscall)."""
        self._observers.add(observer, ops)

    def when_started(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook()`` once every service has started, before the socket takes clients."""
        self._when_started.append(hook)

    def when_stopping(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` as the shutdown begins, before anything is stopped."""
        self._when_stopping.append(hook)

    def adopt(self, fd: int, identity: Identity) -> Any:
        """Serve a connected socket fd (ours from now on) as a client with ``identity``."""
        conn = self.reactor.adopt(socket.socket(fileno=fd))
        conn.context = identity
        # Counted but never refused: an agent's inherited connection must not lose a race
        # with connections it opened by path before the kernel handed that one over.
        self._admit(conn, refusable=False)
        return conn

    def connections_of(self, agent_id: str) -> list[Any]:
        return list(self._agent_conns.get(agent_id, ()))

    def connected_agents(self) -> int:
        """How many agents hold a connection (LIST ``include: registries``)."""
        return len(self._agent_conns)

    def set_reply_limit(self, conn: Any, limit: int) -> None:
        """Remember the largest payload ``conn`` accepts (its HELLO said so)."""
        if not conn.closed:
            self._reply_limits[conn] = limit

    def check_reply(self, call: Call, payload: bytes) -> None:
        """Raise ``too_large`` if ``payload`` is longer than the caller's connection accepts.

        A frame over the client's limit would make its decoder fail the whole connection;
        refusing it fails only this request. A handler that must not count an answer the
        client never gets (THINK's tokens) calls this itself before counting it.
        """
        limit = self._reply_limits.get(call.conn, self._default_reply_limit)
        if len(payload) > limit:
            raise TooLarge(f"{op_name(call.op)} reply of {len(payload)} bytes exceeds this "
                           f"connection's limit of {limit} bytes (HELLO max_payload)",
                           size=len(payload), limit=limit)

    def stop(self) -> None:
        """Ask the kernel to shut down (idempotent, callable from handlers)."""
        if self._stopping is not None:
            self._stopping.set()

    # -- reactor callbacks --------------------------------------------------------

    def _on_accept(self, conn: Any) -> None:
        identity = Identity.from_peer(conn.peer_pid, conn.peer_uid, conn.peer_gid)
        if self.peer_agent is not None:
            # A process inside an agent comes in as that agent, never as its uid's admin.
            pidfd = peer_pidfd(conn.fd)
            try:
                process = self._outsiders.key(pidfd)
                agent_id = None if process in self._outsiders else self.peer_agent(conn.peer_pid, pidfd)
                if agent_id is None:
                    self._outsiders.add(process)
            except PeerGone:
                conn.close()
                return
            except Exception:
                # Unknown who it is: never let it in as its uid (nor take the kernel down).
                log.exception("cannot tell whether pid %d is inside an agent; refusing it", conn.peer_pid)
                conn.close()
                return
            finally:
                if pidfd is not None:
                    os.close(pidfd)
            if agent_id is not None:
                identity = Identity(pid=conn.peer_pid, uid=conn.peer_uid, gid=conn.peer_gid,
                                    agent_id=agent_id)
        conn.context = identity
        self._admit(conn)

    def _admit(self, conn: Any, *, refusable: bool = True) -> None:
        """Count a new connection against its agent's or uid's cap; past it, refuse it with busy."""
        refusal = self.admission.admit(conn.context)
        if conn.context.agent_id is not None:
            self._agent_conns.setdefault(conn.context.agent_id, {})[conn] = None
        if refusal is not None and refusable:
            conn.close_with_error(encode_payload(refusal.to_payload()))

    def _on_frame(self, conn: Any, opcode: int, flags: int, request_id: int, payload: bytes) -> None:
        if self.shutting_down:
            conn.send(opcode, _ERROR_REPLY, request_id, _SHUTTING_DOWN)
            return
        handler = self.table.get(opcode)
        if handler is None:
            name = op_name(opcode)
            err = NotImplementedSyscall(f"syscall {name} (opcode 0x{opcode:02x}) is not "
                                        "implemented by this kernel", opcode=opcode)
            conn.send(opcode, _ERROR_REPLY, request_id, encode_payload(err.to_payload()))
            return
        call = Call(self, conn, opcode, request_id, payload)
        task = self.loop.create_task(self._run(call, handler))
        tasks = self._tasks.get(conn)
        if tasks is None:
            tasks = self._tasks[conn] = set()
        tasks.add(task)  # _run takes it out as it ends: no done callback (a loop turn) per syscall

    def _on_close(self, conn: Any) -> None:
        if conn.context is not None:  # None: refused before it had an identity.
            self.admission.release(conn.context)
            agent_id = conn.context.agent_id
            if agent_id is not None and agent_id in self._agent_conns:
                self._agent_conns[agent_id].pop(conn, None)
                if not self._agent_conns[agent_id]:
                    del self._agent_conns[agent_id]
        self._reply_limits.pop(conn, None)
        self._heap.closed()
        # A client that hangs up cancels what it asked for.
        for task in self._tasks.pop(conn, ()):
            task.cancel()
        waiter = self._drain_waiters.pop(conn, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed("client disconnected"))

    def _on_drain(self, conn: Any) -> None:
        waiter = self._drain_waiters.pop(conn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- dispatch -------------------------------------------------------------------

    async def _run(self, call: Call, handler: Any) -> None:
        started = time.perf_counter()
        outcome = "ok"
        conn = call.conn
        try:
            call.decode()
            for guard in self._guards.of(call.op):
                guard(call)
            result = await handler(call)
            payload = encode_payload(result)
            self.check_reply(call, payload)
        except SyscallError as exc:
            outcome = exc.code.value
            conn.send(call.op, _ERROR_REPLY, call.request_id, encode_payload(exc.to_payload()))
        except (asyncio.CancelledError, ConnectionClosed):
            outcome = "cancelled"
            if self.shutting_down and not conn.closed:
                conn.send(call.op, _ERROR_REPLY, call.request_id, _SHUTTING_DOWN)
        except Exception as exc:
            err = self._unexpected(call, exc)
            outcome = err.code.value
            conn.send(call.op, _ERROR_REPLY, call.request_id, encode_payload(err.to_payload()))
        else:
            conn.send(call.op, _STREAM_END if call.streamed else _REPLY, call.request_id, payload)
        tasks = self._tasks.get(conn)
        if tasks is not None:  # None: the connection closed, which forgot its tasks
            tasks.discard(asyncio.current_task(self.loop))
        observers = self._observers.of(call.op)
        if observers:
            # After the reply goes out (the reactor writes it as the next iteration starts):
            # the audit record costs the caller no latency. The caller's next request is read
            # in a later iteration still, so it never overtakes this record.
            self.loop.call_soon(self._observe, observers, call, outcome, time.perf_counter() - started)

    def _unexpected(self, call: Call, exc: Exception) -> SyscallError:
        """The error a syscall's unforeseen exception is answered with."""
        if isinstance(exc, OSError) and exc.errno in OUT_OF_FILES:
            # Not a bug but the fd limit (a SPAWN needs several): retry once clients close some.
            log.warning("syscall %s: out of open files (%s)", op_name(call.op), exc)
            return out_of_files(exc.errno, self.reactor.accept_backoff)
        log.exception("syscall %s failed", op_name(call.op))
        return InternalError(f"{op_name(call.op)} failed inside the kernel: {type(exc).__name__}: {exc}")

    @staticmethod
    def _observe(observers: tuple[Observer, ...], call: Call, outcome: str, latency: float) -> None:
        for observer in observers:
            try:
                observer(call, outcome, latency)
            except Exception:
                log.exception("syscall observer failed")

    async def send_stream_chunk(self, call: Call, chunk: Any) -> None:
        conn = call.conn
        if conn.closed:
            raise ConnectionClosed("client disconnected")
        payload = encode_payload(chunk)
        self.check_reply(call, payload)
        conn.send(call.op, _STREAM_CHUNK, call.request_id, payload)
        if conn.write_buffered > self.config.write_high_water:
            # The client is not reading: wait for it instead of buffering without bound.
            waiter = self._drain_waiters.get(conn)
            if waiter is None or waiter.done():
                waiter = self._drain_waiters[conn] = self.loop.create_future()
            await asyncio.shield(waiter)

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a clean shutdown."""
        before, limit = reactor_py.raise_fd_limit()
        log.info("open files: up to %d%s", limit,
                 f" (soft limit raised from {before})" if before != limit else "")
        backlog = listen_backlog()
        log.info("listen backlog: %d clients (net.core.somaxconn)", backlog)
        listener = bind_socket(self.config.socket_path, self.config.socket_mode, backlog)
        try:
            with asyncio.Runner(loop_factory=lambda: ReactorLoop(self.reactor)) as runner:
                runner.run(self._main(listener))
        finally:
            _unlink_socket(self.config.socket_path, listener)

    def _stop_on(self, sig: int) -> None:
        self._stopped_by = signal.Signals(sig).name
        self.stop()

    async def _main(self, listener: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        stops = [signal.SIGTERM, signal.SIGINT]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup it stays ignored
            stops.append(signal.SIGHUP)  # its terminal closed (the guardian passes it on too)
        for sig in stops:
            self.loop.add_signal_handler(sig, self._stop_on, sig)
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        started: list[Service] = []
        try:
            for service in build_services(self):
                self.table.add_all(service.syscalls())
                await service.start()
                started.append(service)
                self.services[service.name] = service
            for hook in self._when_started:
                await hook()
            self.reactor.listen(listener)
            log.info("agentos kernel %s listening on %s (pid %d, extensions: %s)", __version__,
                     self.config.socket_path, os.getpid(),
                     ", ".join(f"{k}={'on' if v else 'off'}" for k, v in EXTENSIONS_LOADED.items()))
            await self._stopping.wait()
            log.info("shutting down (%s)", self._stopped_by)
        finally:
            await self._shutdown(started)

    async def _shutdown(self, started: list[Service]) -> None:
        self.shutting_down = True
        for hook in self._when_stopping:
            hook()
        # Clients first: no syscall may reach a service that is already stopping. Agents'
        # connections close (their agents are being stopped); a client's stays open until the
        # kernel has stopped, its syscalls refused with unavailable (those in flight too) and
        # its NOOPs answered by the reactor: it learns why, and sees the kernel still answer
        # while thousands of agents are being stopped.
        self.reactor.stop_listening()
        # A slice at a time (500 agents' closes held the loop 7.6 ms of CPU in one go); what
        # the rest send meanwhile is refused as above.
        async for conn in in_slices(list(self.reactor.connections)):
            if conn.context is None or conn.context.agent_id is not None:
                conn.close()
        pending = [t for tasks in self._tasks.values() for t in tasks]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("service %s failed to stop cleanly", service.name)
        # Agents reaped during the stops may have handed us connections since.
        for conn in self.reactor.connections:
            conn.close()
        self._heap.close()


def listen_backlog() -> int:
    """As many clients waiting to be accepted as the host allows: net.core.somaxconn caps any
    listen() backlog (4096 by default since Linux 5.4). Past it a blocking connect() waits and
    a non-blocking one fails with EAGAIN, before the kernel could answer even ``busy``."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return socket.SOMAXCONN


def bind_socket(path: Path, mode: int, backlog: int) -> socket.socket:
    """Bind the kernel's socket: refuse a live kernel, replace a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise KernelAlreadyRunning(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            path.unlink(missing_ok=True)  # Stale: its kernel died without cleaning up.
        else:
            raise KernelAlreadyRunning(f"a live kernel already serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0600 from birth, with no window where others could connect.
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(backlog)
    return sock


def _unlink_socket(path: Path, listener: socket.socket) -> None:
    """Remove our socket file on the way out (only if it is still a socket)."""
    listener.close()
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
