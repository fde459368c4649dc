"""EXPOSE and UNEXPOSE: a server on an agent's own loopback, reachable from the host through
the kernel, by the caller only; the agent's network stays as it was.

An exposure is a Unix socket the kernel listens on, in a directory of its own that only
the caller may enter, and optionally (``tcp``) a 127.0.0.1 port. Each connection
accepted there is checked to come from the caller (the socket's peer credentials; for
TCP, the uid owning the peer's socket), then forwarded to ``127.0.0.1:PORT`` inside the
agent's network namespace through a socket made there by a helper process
(``sandbox/netns.py``) and connected by the kernel. Bytes are copied both ways on the
kernel's loop by two asyncio protocols, each pausing its reading while the other side's
writes are above their high-water mark: one connection holds at most a few hundred KiB
in the kernel, whatever its two ends do.

A connection accepted and bytes going either way are activity for the agent's
``idle_timeout`` (a server someone is using is not idle); an open connection with
nothing moving is not, as a syscall waiting is not.

An exposure lives as long as the EXPOSE stream that made it: it ends with UNEXPOSE, with
its agent, or when its caller's connection goes; the socket file, its directory and the
helper go with it. Who may: ``spawn`` and a target that is the caller or its descendant
(EXEC's rule): an exec running a client inside the agent reaches that port already.
"""
from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import secrets
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..errors import Busy, InvalidArgument, NotFound, Unavailable
from ..kernel.identity import Identity
from ..kernel.peers import PeerGone, peer_pidfd
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from ..protocol.requests import ExposeRequest, UnexposeRequest
from ..sandbox import netns
from ..sandbox._linux import linux
from ..sandbox.zygote import base_env
from .agent import Agent

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes.ports")

_HELPER = str(Path(netns.__file__).resolve())
#: The namespaces the helper joins, of those the agent has: the user one only to be allowed the other.
_JOINED = linux.CLONE_NEWUSER | linux.CLONE_NEWNET
_PEERCRED = struct.Struct("3i")
#: 127.0.0.1 as /proc/net/tcp prints it: the address's bytes read as a native-endian u32.
_LOOPBACK = f"{struct.unpack('=I', socket.inet_aton('127.0.0.1'))[0]:08X}"
#: How many connections wait in the listen queue while the loop gets to them.
_BACKLOG = 64


class _Maker:
    """Sockets made in an agent's network namespace: by its helper, or here when the agent
    shares the kernel's namespace (``network: true``, unsandboxed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.helper: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self._waiting: collections.deque[asyncio.Future[socket.socket]] = collections.deque()

    async def start(self, pidfd: int, namespaces: int) -> None:
        """Start the helper in the namespaces of the agent ``pidfd`` (the caller's, open until this returns)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.helper = await self.loop.run_in_executor(None, _run_helper, theirs.fileno(), pidfd, namespaces)
        finally:
            theirs.close()
        self.control = ours
        ours.setblocking(False)
        first = await self.loop.sock_recv(ours, 512)
        if first != b"R":
            raise OSError(errno.EPROTO, f"the helper could not join the agent's network: "
                                        f"{first[1:].decode(errors='replace') or 'it exited'}")
        self.loop.add_reader(ours.fileno(), self._received)

    async def make(self) -> socket.socket:
        if self.control is None:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        made: asyncio.Future[socket.socket] = self.loop.create_future()
        self._waiting.append(made)
        try:
            self.control.send(b"s")
        except OSError as exc:
            self._waiting.remove(made)
            raise OSError(exc.errno, f"the helper is gone: {exc.strerror}") from None
        return await made

    def _received(self) -> None:
        assert self.control is not None
        fds = array.array("i")
        try:
            message, ancillary, _, _ = self.control.recvmsg(1, socket.CMSG_LEN(fds.itemsize),
                                                            socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            message, ancillary = b"", []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        if not message:
            self._fail()
            return
        for fd in fds:
            made = socket.socket(fileno=fd)
            waiter = self._waiting.popleft() if self._waiting else None
            if waiter is None or waiter.done():  # its connection went meanwhile
                made.close()
            else:
                waiter.set_result(made)

    def _fail(self) -> None:
        if self.control is not None:
            self.loop.remove_reader(self.control.fileno())
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(OSError(errno.EPIPE, "the helper is gone"))

    def close(self) -> subprocess.Popen[bytes] | None:
        """Stop making sockets; the helper, killed, for the caller to reap."""
        if self.control is not None:
            self._fail()
            self.control.close()
            self.control = None
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.kill()
        return helper


class _Side(asyncio.Protocol):
    """One end of a forwarded connection: what it reads is written to its peer."""

    def __init__(self, link: _Link, counter: str) -> None:
        self.link = link
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.link.made(self)

    def data_received(self, data: bytes) -> None:
        exposure = self.link.exposure
        setattr(exposure, self.counter, getattr(exposure, self.counter) + len(data))
        exposure.touch()
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if peer.eof:  # both ways done
                self.link.close()
            elif peer.transport.can_write_eof():
                peer.transport.write_eof()
        return True  # half-closed: the other way goes on

    # The peer's writes are backed up: stop reading what would be written there.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(self)


class _Link:
    """One forwarded connection: the host's side, then the agent's once connected."""

    def __init__(self, exposure: Exposure) -> None:
        self.exposure = exposure
        self.host = _Side(self, "bytes_in")
        self.agent: _Side | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.closed = False

    def made(self, side: _Side) -> None:
        if side is not self.host:
            return
        transport = cast(asyncio.Transport, side.transport)
        exposure = self.exposure
        if not exposure.open or not exposure.admits(transport):
            exposure.refused += 1
            self.closed = True
            transport.abort()
            return
        if len(exposure.links) >= exposure.max_connections:
            exposure.refused += 1
            log.info("exposure %s: %d connections open, closing a new one", exposure.id, len(exposure.links))
            self.closed = True
            transport.abort()
            return
        exposure.accepted += 1
        exposure.touch()
        exposure.links.add(self)
        transport.pause_reading()  # until the agent's side is there to write to
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        exposure = self.exposure
        loop = asyncio.get_running_loop()
        try:
            made = await exposure.maker.make()
        except OSError as exc:
            log.info("exposure %s: no socket in agent %s: %s", exposure.id, exposure.agent.name, exc)
            self.close()
            return
        try:
            made.setblocking(False)
            await loop.sock_connect(made, ("127.0.0.1", exposure.port))
            agent = self.agent = _Side(self, "bytes_out")
            agent.peer, self.host.peer = self.host, agent
            await loop.create_connection(lambda: agent, sock=made)
        except OSError:  # nothing listens there (yet): the client sees the connection end
            made.close()
            self.close()
            return
        except BaseException:
            made.close()
            raise
        host = self.host.transport
        if self.closed or host is None or host.is_closing():
            self.close()
        else:
            host.resume_reading()

    def lost(self, side: _Side) -> None:
        peer = self.agent if side is self.host else self.host
        if peer is not None and peer.transport is not None:
            peer.transport.close()  # after what it still has to write
        if side is self.host and self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        if all(s is None or s.transport is None or s.transport.is_closing() for s in (self.host, self.agent)):
            self.closed = True
            self.exposure.links.discard(self)

    def close(self, *, abort: bool = False) -> None:
        self.closed = True
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        for side in (self.host, self.agent):
            if side is not None and side.transport is not None:
                if abort:
                    side.transport.abort()
                else:
                    side.transport.close()
        self.exposure.links.discard(self)


@dataclasses.dataclass(eq=False)
class Exposure:
    """One EXPOSE, from the syscall to its end."""

    id: str
    agent: Agent
    port: int
    owner: Identity
    #: The owner's private directory, and the socket in it.
    directory: Path
    path: Path
    maker: _Maker
    max_connections: int
    peer_agent: Any
    #: Tells the agent's idle clock it is in use: a connection accepted, bytes either way.
    touch: Callable[[], None]
    servers: list[asyncio.AbstractServer] = dataclasses.field(default_factory=list)
    tcp: tuple[str, int] | None = None
    links: set[_Link] = dataclasses.field(default_factory=set)
    accepted: int = 0
    refused: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    started_at: float = dataclasses.field(default_factory=time.time)
    ended_at: float | None = None
    reason: str | None = None
    ended: asyncio.Future[None] = dataclasses.field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def open(self) -> bool:
        return self.reason is None

    def admits(self, transport: asyncio.Transport) -> bool:
        """Whether the connection comes from the owner: the same outside uid and no agent's
        process, or (an agent's exposure) a process of that agent."""
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        if sock.family == socket.AF_UNIX:
            pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           _PEERCRED.size))
            if self.owner.agent_id is None and uid != self.owner.uid:
                return False
            pidfd = peer_pidfd(sock.fileno())
            try:
                return bool(self.peer_agent(pid, pidfd) == self.owner.agent_id)
            except PeerGone:
                return False
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        peer, local = sock.getpeername(), sock.getsockname()
        return _tcp_owner(peer[1], local[1]) == self.owner.uid

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent.id, "name": self.agent.name, "port": self.port,
                "path": str(self.path), "tcp": None if self.tcp is None else f"{self.tcp[0]}:{self.tcp[1]}",
                "status": "open" if self.open else "closed", "ended": self.reason,
                "connections": len(self.links), "accepted": self.accepted, "refused": self.refused,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "started_at": self.started_at, "ended_at": self.ended_at}


class Ports:
    """The EXPOSE syscalls of the processes service, and every open exposure."""

    def __init__(self, service: ProcessService) -> None:
        self.service = service
        self._exposures: dict[str, Exposure] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.kernel.loop

    def syscalls(self) -> dict[Op, Handler]:
        return {Op.EXPOSE: self.expose, Op.UNEXPOSE: self.unexpose}

    def close(self) -> None:
        """At shutdown: nothing of an exposure may outlive the kernel."""
        for exposure in list(self._exposures.values()):
            self._end(exposure, "kernel stopped", abort=True)

    # -- syscalls --------------------------------------------------------------------

    async def expose(self, call: Call) -> dict[str, Any]:
        """Open an exposure and stream its address, then hold it until it ends; or ``list``."""
        request = cast(ExposeRequest, call.request)
        if request.listing is True:
            may = self.service.execs._may_enter(call.identity)
            agent = None
            if request.id not in (UNSET, None) or request.name not in (UNSET, None):
                agent = self._target(call.identity, request.fields())
            return {"exposures": [e.info() for e in self._exposures.values()
                                  if may(e.agent) and (agent is None or e.agent is agent)]}
        if request.port is UNSET:
            raise InvalidArgument("EXPOSE needs port (1-65535): the agent's loopback port to reach",
                                  field="port")
        exposure = await self._open(call.identity, request)
        try:
            call.open_stream()
            await call.stream(exposure.info())
            await asyncio.shield(exposure.ended)
        finally:
            # A caller that goes away takes its exposure with it.
            self._end(exposure, "caller gone")
        return exposure.info()

    async def unexpose(self, call: Call) -> dict[str, Any]:
        request = cast(UnexposeRequest, call.request)
        exposure = self._exposures.get(request.exposure)
        if exposure is None or not self.service.execs._may_enter(call.identity)(exposure.agent):
            raise NotFound(f"no exposure {request.exposure!r} that you may reach", exposure=request.exposure)
        self._end(exposure, "unexposed")
        return exposure.info()

    # -- opening ---------------------------------------------------------------------

    def _target(self, identity: Identity, ref: dict[str, Any]) -> Agent:
        may_enter = self.service.execs._may_enter(identity)
        agent = self.service.lookup(identity, ref, may_enter)
        if not may_enter(agent):
            raise NotFound(f"no agent {ref.get('id') or ref.get('name')!r} whose ports you may expose "
                           "(yourself and your descendants)",
                           **{k: v for k, v in ref.items() if k in ("id", "name")})
        return agent

    async def _open(self, identity: Identity, request: ExposeRequest) -> Exposure:
        agent = self._target(identity, request.fields())
        self.service.lifecycle.touch(agent.id)  # driven from outside, as an EXEC into it is
        tcp = request.tcp is True
        if tcp and identity.agent_id is not None:
            raise InvalidArgument("tcp: an agent's loopback is its own; it reaches an exposure by its path",
                                  field="tcp")
        if not agent.running or not agent.local_process:
            raise Unavailable(f"agent {agent.name!r} is not running ({agent.status})", id=agent.id,
                              status=agent.status)
        settings = self.service.settings
        if sum(1 for e in self._exposures.values() if e.agent is agent) >= settings.exposures_per_agent:
            raise Busy(f"agent {agent.name!r} already has {settings.exposures_per_agent} exposures",
                       limit=settings.exposures_per_agent)
        maker = _Maker(self.loop)
        namespaces = (agent.entry.join if agent.entry is not None else 0) & _JOINED
        exposure_id = secrets.token_hex(16)
        directory = _base() / exposure_id
        exposure = Exposure(id=exposure_id, agent=agent, port=cast(int, request.port), owner=identity,
                            directory=directory, path=directory / f"{request.port}.sock", maker=maker,
                            max_connections=settings.connections_per_exposure,
                            peer_agent=self.service.agent_of_peer,
                            touch=functools.partial(self.service.lifecycle.touch, agent.id))
        try:
            if namespaces & linux.CLONE_NEWNET:
                pidfd = agent.open_pidfd()
                try:
                    await maker.start(pidfd, namespaces)
                finally:
                    os.close(pidfd)
            await self._listen(exposure, tcp)
        except BaseException as exc:
            self._release(exposure, abort=True)
            if isinstance(exc, OSError):
                raise Unavailable(f"cannot expose port {request.port} of agent {agent.name!r}: {exc}",
                                  id=agent.id) from None
            raise
        if not agent.running:  # it ended while the helper started
            self._release(exposure, abort=True)
            raise Unavailable(f"agent {agent.name!r} ended", id=agent.id, status=agent.status)
        self._exposures[exposure.id] = exposure
        agent.ended.add_done_callback(lambda _: self._end(exposure, "agent ended"))
        log.info("exposure %s: port %d of agent %s (%s) at %s%s", exposure.id, exposure.port, agent.name,
                 agent.id, exposure.path, "" if exposure.tcp is None else " and {}:{}".format(*exposure.tcp))
        return exposure

    async def _listen(self, exposure: Exposure, tcp: bool) -> None:
        def link() -> _Side:
            return _Link(exposure).host

        owner = exposure.owner
        os.mkdir(exposure.directory, 0o700)
        os.chmod(exposure.directory, 0o700)  # whatever the umask
        server = await self.loop.create_unix_server(link, str(exposure.path), backlog=_BACKLOG)
        exposure.servers.append(server)
        # Made private to the owner before its directory opens to it: no moment when another can.
        _give(exposure.path, owner, 0o600)
        _give(exposure.directory, owner, 0o700)
        if tcp:
            server = await self.loop.create_server(link, "127.0.0.1", 0, backlog=_BACKLOG)
            exposure.servers.append(server)
            exposure.tcp = server.sockets[0].getsockname()[:2]

    # -- the end ---------------------------------------------------------------------

    def _end(self, exposure: Exposure, reason: str, *, abort: bool = False) -> None:
        if not exposure.open:
            return
        exposure.reason = reason
        exposure.ended_at = time.time()
        self._exposures.pop(exposure.id, None)
        self._release(exposure, abort=abort)
        if not exposure.ended.done():
            exposure.ended.set_result(None)
        log.info("exposure %s ended (%s): %d connections, %d bytes in, %d out", exposure.id, reason,
                 exposure.accepted, exposure.bytes_in, exposure.bytes_out)

    def _release(self, exposure: Exposure, *, abort: bool) -> None:
        for server in exposure.servers:
            server.close()
        exposure.servers.clear()
        for link in list(exposure.links):
            link.close(abort=abort)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(exposure.path)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(exposure.directory)
        helper = exposure.maker.close()
        if helper is not None:
            self.service._spawn_background(self._reap(helper))

    async def _reap(self, helper: subprocess.Popen[bytes]) -> None:
        await self.loop.run_in_executor(None, helper.wait)


# -- helpers ---------------------------------------------------------------------------

def _run_helper(control: int, target: int, namespaces: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-S", _HELPER, str(control), str(target), str(namespaces)],
                            pass_fds=(control, target), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            cwd="/", env=base_env(), start_new_session=True)


def _base() -> Path:
    """The directory every exposure's own directory is made in: the kernel's, ``0711`` (its
    entries can be reached by name, never listed), refused if anyone else could have made it."""
    base = Path(os.path.realpath(tempfile.gettempdir())) / f"agentos-ports-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o711)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise Unavailable(f"{base} is not a directory of uid {os.geteuid()} that only it may change: "
                          "remove it and expose again")
    if stat.S_IMODE(info.st_mode) != 0o711:
        os.chmod(base, 0o711)
    return base


def _give(path: Path, owner: Identity, mode: int) -> None:
    """Make ``path`` usable by ``owner`` only (root aside).

    An outside uid other than the kernel's (and root, who needs nothing) gets it chowned;
    a kernel that is not root cannot chown, so there the directory is left traversable
    (``0711``) and the socket connectable: its name is a random 128-bit token in a base
    that cannot be listed, and every connection is still checked to be the owner's.
    """
    if owner.agent_id is not None or owner.uid in (0, os.geteuid()):
        os.chmod(path, mode)
    elif os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
        os.chmod(path, mode)
    else:
        os.chmod(path, mode | (0o011 if mode & 0o100 else 0o066))


def _tcp_owner(peer_port: int, local_port: int) -> int | None:
    """The uid owning the socket at 127.0.0.1:``peer_port`` connected to our ``local_port``, as
    the host's /proc/net/tcp tells it (the uid that made the socket); None if it is gone."""
    wanted = (f"{_LOOPBACK}:{peer_port:04X}", f"{_LOOPBACK}:{local_port:04X}")
    try:
        with open("/proc/self/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if (fields[1], fields[2]) == wanted:
                    return int(fields[7])
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return None
