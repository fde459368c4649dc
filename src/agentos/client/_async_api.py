"""Every public call of the SDK, written once: in ``_async_api.py``.

``_sync_api.py`` is generated from it by ``python -m agentos.client._generate``
(``async``/``await`` dropped, ``AsyncX`` names renamed ``X``), and a test fails when that
file is stale or when the public APIs of ``Client`` and ``AsyncClient`` differ. Each client
supplies only its transport: the abstract methods below. Docstrings serve both clients, so
they name no flavour.
"""
from __future__ import annotations

import abc
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from ..errors import ConnectionClosed, NotFound, SyscallError
from ..protocol import DEFAULT_MAX_PAYLOAD, FrameDecoder, Op
from ..protocol.payload import decode_json, encode_payload
from . import exec as _exec
from . import files as _files
from . import messaging as _messaging
from . import ports as _ports
from . import processes as _processes
from . import sandbox as _sandbox
from . import state as _state
from . import think as _think
from ._common import approval_request, check_echo, reply_field, reply_object, takes


class AsyncClientMethods(abc.ABC):
    _decoder: FrameDecoder

    # -- the transport ---------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    async def connect(cls, socket_path: str | os.PathLike[str] | None = None, *,
                      fd: int | None = None, timeout: float | None = None,
                      max_payload: int = DEFAULT_MAX_PAYLOAD) -> Self:
        """Connect to the kernel: ``fd``, else ``AGENTOS_FD`` (the connection the kernel
        handed this agent), else a path (``socket_path``, ``AGENTOS_SOCKET``, the default).
        A wait for a reply longer than ``timeout`` seconds raises ``TimeoutError`` (the
        connection stays usable); ``max_payload`` is the largest reply accepted."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; calls and streams still open fail with ``ConnectionClosed``."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """The connection's socket descriptor (-1 once closed)."""

    @abc.abstractmethod
    async def _request(self, op: int, payload: bytes) -> memoryview:
        """Send one request; its single reply's payload (an ERROR reply raises)."""

    @abc.abstractmethod
    async def _requests(self, op: int, payloads: list[bytes]) -> list[memoryview]:
        """``_request`` for many payloads at once: one write, replies in order."""

    @abc.abstractmethod
    def _stream(self, op: int, args: Any = None, *, raw: bool = False) -> AsyncIterator[Any]:
        """Each STREAM chunk of a streamed reply (JSON; with ``raw`` its bytes), then the END
        payload (JSON) if it has one; the request carries ``trace_with``'s context."""

    async def _call(self, op: int, args: Any = None) -> dict[str, Any]:
        """Send a JSON request, return the JSON reply."""
        return reply_object(decode_json(await self._request(op, encode_payload(self._traced(args)))))

    #: What ``trace_with`` set: a ``traceparent``, or a callable returning the current one.
    _traceparent: str | Callable[[], str | None] | None = None

    def trace_with(self, traceparent: str | Callable[[], str | None] | None) -> None:
        """Send a W3C ``traceparent`` with every JSON request from now on, so the kernel's spans
        of them join that trace (docs/observability.md); a callable is asked before each request
        (the current span of the caller's own tracing), None stops. A malformed one is refused
        by the kernel with ``invalid_argument``."""
        self._traceparent = traceparent

    def _traced(self, args: Any) -> Any:
        """``args`` (a JSON request's fields) with the ``traceparent`` ``trace_with`` asks for."""
        value = self._traceparent() if callable(self._traceparent) else self._traceparent
        return args if value is None else {**(args or {}), "traceparent": value}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- core ------------------------------------------------------------------------

    async def noop(self, payload: bytes = b"") -> bytes:
        """Round trip ``payload`` through the kernel (answered without entering Python)."""
        check_echo(payload, self._decoder.max_payload)
        return bytes(await self._request(Op.NOOP, payload))

    async def noop_batch(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Pipeline many NOOPs: one write for all requests, replies read as they come in."""
        payloads = list(payloads)
        for payload in payloads:
            check_echo(payload, self._decoder.max_payload)
        return [bytes(reply) for reply in await self._requests(Op.NOOP, payloads)]

    async def echo(self, text: str) -> str:
        """Seed compatibility: NOOP with a text payload."""
        reply = await self.noop(text.encode())
        return reply.decode()

    async def hello(self) -> dict[str, Any]:
        """Kernel and protocol version, served syscalls and this host's capabilities."""
        return await self._call(Op.HELLO)

    # -- processes -------------------------------------------------------------------

    @takes(_processes.spawn_request)
    async def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start an agent: a Python ``script``, or a ``command``. Returns
        ``{id, name, pid, status, isolation, ...}``."""
        return await self._call(Op.SPAWN, request)

    @takes(_processes.kill_request)
    async def kill(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stop an agent by name (or ``id=``): SIGTERM, SIGKILL after ``grace``; returns
        its final state."""
        return await self._call(Op.KILL, request)

    async def pause(self, agent: str | None = None, *, id: str | None = None) -> dict[str, Any]:
        """Freeze the agent and its descendants (cgroup freezer) until ``resume``: they use no
        CPU and their syscalls' replies and mail wait in the kernel. Needs ``kill`` on it."""
        return await self._call(Op.PAUSE, _processes.target(agent, id=id))

    async def resume(self, agent: str | None = None, *, id: str | None = None) -> dict[str, Any]:
        """Thaw what ``pause`` of this agent froze (an agent another pause holds stays frozen)."""
        return await self._call(Op.RESUME, _processes.target(agent, id=id))

    async def start(self, agent: str | None = None, *, id: str | None = None) -> dict[str, Any]:
        """Spawn an ended agent again from the SPAWN request the kernel remembers of it (its last
        process's, or ``id``'s), as this caller; a running one is left alone. The answer is
        SPAWN's, with ``started`` false when it was already running."""
        return await self._call(Op.START, _processes.target(agent, id=id))

    async def list_agents(self, status: str | list[str] | None = None,
                          name: str | None = None, project: str | None = None, *,
                          include: Sequence[str] = (), limit: int | None = None,
                          cursor: str | None = None) -> list[dict[str, Any]]:
        """Running and recently ended agents, with status, exit code and cgroup usage (and
        ``usage_age``, how many seconds ago it was read); only ``project``'s if given (``""``:
        those of no project). ``name`` may be ``project/name``. ``include=["isolation"]`` adds
        each agent's isolation report (as SPAWN answered it). All of them (at most ``limit``,
        after a page's ``cursor``), fetched a page at a time (``iter_agents``)."""
        return [agent async for agent in self.iter_agents(status, name, project, include=include, limit=limit,
                                                          cursor=cursor)]

    async def iter_agents(self, status: str | list[str] | None = None,
                          name: str | None = None, project: str | None = None, *,
                          include: Sequence[str] = (), limit: int | None = None,
                          cursor: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each agent ``list_agents`` returns, as its page arrives: one LIST whose reply the
        kernel streams a page (``processes.list_page`` agents) at a time."""
        request = _processes.list_request(status, name, project, include, limit=limit, cursor=cursor,
                                          stream=True)
        async for chunk in self._stream(Op.LIST, request):
            for agent in chunk.get("agents", ()):
                yield agent

    async def list_page(self, status: str | list[str] | None = None,
                        name: str | None = None, project: str | None = None, *,
                        include: Sequence[str] = (), limit: int | None = None,
                        cursor: str | None = None) -> dict[str, Any]:
        """One page of ``list_agents``: ``{"agents": [...], "cursor": ...}``, at most ``limit``
        (and ``processes.list_page``) agents; pass its ``cursor`` for the next page (None: the
        last page)."""
        return await self._call(Op.LIST, _processes.list_request(status, name, project, include,
                                                                 limit=limit, cursor=cursor))

    async def purge(self, project: str) -> dict[str, Any]:
        """Remove ``project``'s mailboxes, state, registered names and volumes (yours; an admin's:
        every uid's). Its agents must have ended. Returns what was removed, by kind."""
        return await self._call(Op.PURGE, {"project": project})

    async def list_volumes(self, project: str | None = None, *, uid: int | None = None) -> list[dict[str, Any]]:
        """Named volumes: yours (an admin's: every uid's, or ``uid``'s), only ``project``'s if
        given (``""``: those of no project); an agent sees those it has mounted. Each is
        ``{name, project, uid, kind, size, in_use, allocated?, used?, free?}``."""
        reply = await self._call(Op.VOLUMES, _processes.volumes_request("ls", None, project, uid))
        return reply_field(reply, "volumes", list)

    async def inspect_volume(self, name: str, *, project: str | None = None,
                             uid: int | None = None) -> dict[str, Any]:
        """One named volume, as ``list_volumes`` shows it (``project`` when several have the name)."""
        return await self._call(Op.VOLUMES, _processes.volumes_request("inspect", name, project, uid))

    async def remove_volume(self, name: str, *, project: str | None = None,
                            uid: int | None = None) -> dict[str, Any]:
        """Delete a named volume and its data (no agent may be using it); returns ``{removed}``."""
        return await self._call(Op.VOLUMES, _processes.volumes_request("rm", name, project, uid))

    @takes(_processes.wait_request)
    async def wait(self, request: dict[str, Any]) -> dict[str, Any]:
        """Wait until the agent ends (or ``until="ready"``), at most ``timeout`` seconds;
        returns its state."""
        return await self._call(Op.WAIT, request)

    async def logs(self, agent: str | None = None, *, id: str | None = None,
                   tail: int | None = None) -> str:
        """The agent's captured stdout and stderr (the last ``tail`` bytes, 64 KiB by
        default)."""
        reply = await self._call(Op.LOGS, _processes.logs_request(agent, id=id, tail=tail))
        return reply_field(reply, "data", str)

    async def follow_logs(self, agent: str | None = None, *, id: str | None = None,
                          tail: int | None = None) -> AsyncIterator[str]:
        """Yield the agent's output as it is written, until the agent ends."""
        request = _processes.logs_request(agent, id=id, tail=tail, follow=True)
        async for chunk in self._stream(Op.LOGS, request):
            if "data" in chunk:
                yield chunk["data"]

    async def ready(self) -> dict[str, Any]:
        """Tell the kernel this agent is up (WAIT ``until="ready"`` and supervisors see it)."""
        return await self._call(Op.READY)

    # -- exec ------------------------------------------------------------------------

    async def exec(self, agent: str | None, command: str | Sequence[str], *, id: str | None = None,
                   stdin: bytes | str | None = None, env: Mapping[str, str] | None = None,
                   cwd: str | None = None, timeout: float | str | None = None,
                   user: int | str | None = None) -> _exec.ExecResult:
        """Run ``command`` (an argv list, or a string for ``/bin/sh -c``) inside the running agent
        ``agent`` (or ``id``), confined as the agent is, and wait for it: its stdout, stderr,
        exit code or signal. ``timeout`` seconds of wall time kill its process tree
        (``timed_out``). ``env`` adds to the agent's environment; ``cwd`` is in the agent's view.
        ``user``: the agent's own (default) or ``"nobody"`` (a lesser uid, where the agent's
        isolation allows it); any other is ``permission_denied``."""
        request = _exec.exec_request(agent, command, id=id, stdin=stdin, env=env, cwd=cwd, timeout=timeout,
                                     user=user)
        return await self._exec_collect(request)

    def exec_stream(self, agent: str | None, command: str | Sequence[str], *, id: str | None = None,
                    stdin: bytes | str | None = None, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, timeout: float | str | None = None,
                    pty: tuple[int, int] | None = None, user: int | str | None = None) -> _exec.AsyncExecStream:
        """``exec`` as a stream of ``(stream, bytes)`` pairs as the command writes them;
        ``.result`` afterwards. Leaving it early kills the command."""
        request = _exec.exec_request(agent, command, id=id, stdin=stdin, env=env, cwd=cwd,
                                     timeout=timeout, pty=pty, user=user)
        return _exec.AsyncExecStream(self._stream(Op.EXEC, request, raw=True))

    async def exec_start(self, agent: str | None, command: str | Sequence[str], *, id: str | None = None,
                         stdin: bytes | str | None = None, stdin_open: bool = False,
                         env: Mapping[str, str] | None = None, cwd: str | None = None,
                         timeout: float | str | None = None,
                         pty: tuple[int, int] | None = None, user: int | str | None = None) -> dict[str, Any]:
        """Start ``command`` in the background: its handle (``id``) at once. Its latest output is
        kept until someone attaches; ``stdin_open`` keeps stdin open for ``exec_input``."""
        request = _exec.exec_request(agent, command, id=id, stdin=stdin, stdin_open=stdin_open, env=env,
                                     cwd=cwd, timeout=timeout, background=True, pty=pty, user=user)
        return await self._call(Op.EXEC, request)

    def exec_attach(self, exec_id: str) -> _exec.AsyncExecStream:
        """The output of a background exec (what is kept, then as it comes) until it ends."""
        return _exec.AsyncExecStream(self._stream(Op.EXEC, {"attach": exec_id}, raw=True))

    async def exec_wait(self, exec_id: str) -> _exec.ExecResult:
        """Wait for a background exec to end; its result, with the output from now on."""
        return await self._exec_collect({"attach": exec_id})

    async def exec_input(self, exec_id: str, data: bytes | str = b"", *, eof: bool = False) -> dict[str, Any]:
        """Write ``data`` to a running exec's stdin (answered once it took it all); ``eof`` closes it."""
        return await self._call(Op.EXEC_INPUT, _exec.input_request(exec_id, data, eof))

    async def exec_signal(self, exec_id: str, signal: int | str = "TERM", *,
                          group: bool = True) -> dict[str, Any]:
        """Send ``signal`` to the exec's process group (``group=False``: its main process only)."""
        return await self._call(Op.EXEC_SIGNAL, {"exec": exec_id, "signal": signal, "group": group})

    async def exec_resize(self, exec_id: str, rows: int, cols: int) -> dict[str, Any]:
        """Resize a ``pty`` exec's terminal."""
        return await self._call(Op.EXEC_RESIZE, {"exec": exec_id, "rows": rows, "cols": cols})

    async def exec_list(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Running and recently ended execs you may reach (of one agent, if named)."""
        request: dict[str, Any] = {"list": True} if agent is None else {"list": True, "name": agent}
        return reply_field(await self._call(Op.EXEC, request), "execs", list)

    async def _exec_collect(self, request: dict[str, Any]) -> _exec.ExecResult:
        stream = _exec.AsyncExecStream(self._stream(Op.EXEC, request, raw=True))
        output = {"stdout": bytearray(), "stderr": bytearray()}
        async for name, data in stream:
            output[name] += data
        result = stream.result
        assert result is not None
        result.stdout, result.stderr = bytes(output["stdout"]), bytes(output["stderr"])
        return result

    # -- ports -----------------------------------------------------------------------

    async def expose(self, agent: str | None, port: int, *, id: str | None = None,
                     tcp: bool = False) -> _ports.AsyncExposure:
        """Make ``port`` on the agent's own loopback reachable from this host, by this caller
        only: ``.path`` is a Unix socket in a directory only you may enter, ``.address`` that
        or, with ``tcp``, a ``127.0.0.1`` port (connections from other uids are closed). It lasts
        until ``close()``, the agent's end or this connection's; the agent's network is unchanged."""
        items = self._stream(Op.EXPOSE, _ports.expose_request(agent, port, id=id, tcp=tcp))
        info = await items.__anext__()
        return _ports.AsyncExposure(self, items, info)

    async def unexpose(self, exposure: str | _ports.AsyncExposure) -> dict[str, Any]:
        """End an exposure (by its id, from any connection that may reach its agent): its counts."""
        exposure_id = exposure if isinstance(exposure, str) else exposure.id
        return await self._call(Op.UNEXPOSE, {"exposure": exposure_id})

    async def exposures(self, agent: str | None = None, *, id: str | None = None) -> list[dict[str, Any]]:
        """Open exposures you may reach (of one agent, if named): address, connections, bytes."""
        request: dict[str, Any] = {"list": True}
        if id is not None:
            request["id"] = id
        elif agent is not None:
            request["name"] = agent
        return reply_field(await self._call(Op.EXPOSE, request), "exposures", list)

    # -- sandboxes ---------------------------------------------------------------------

    def sandbox(self, template: str | None = None, *, name: str | None = None,
                limits: Mapping[str, Any] | None = None, network: bool = False,
                timeout: float | str | None = "10m", idle_timeout: float | str | None = None,
                env: Mapping[str, str] | None = None, writable_paths: Sequence[str] = (),
                readonly_paths: Sequence[str] = (),
                workspace: int | str | Mapping[str, Any] | None = None,
                volumes: Sequence[Mapping[str, Any]] | None = None,
                allow_degraded: bool = False, project: str | None = None) -> AsyncSandbox:
        """A sandbox: an agent that idles until driven (``exec``, ``run_code``), isolated, limited
        and timed out as any agent. ``with`` starts it and kills it at the end (or ``start()``
        and ``kill()``). A unique name unless ``name``; ``template`` one of the kernel's templates
        (its root under the view, its modules preloaded). Options as ``spawn``'s (``project``
        too: its name is unique there)."""
        request = _sandbox.sandbox_request(
            template, name=name, limits=limits, network=network, timeout=timeout,
            idle_timeout=idle_timeout, env=env, writable_paths=writable_paths,
            readonly_paths=readonly_paths, workspace=workspace, volumes=volumes, allow_degraded=allow_degraded,
            project=project)
        return AsyncSandbox(self, request)

    # -- files -----------------------------------------------------------------------
    # Paths are the agent's (relative: to its working directory); done inside it, as it.

    async def read_file(self, agent: str | None, path: str, *, id: str | None = None, offset: int = 0,
                        length: int | None = None, text: bool = False,
                        encoding: str = "utf-8") -> bytes | str:
        """A file of the agent's (``length`` bytes from ``offset``, default: to its end), as
        bytes or, with ``text``, decoded. Larger than ``processes.files.max_bytes``: read in parts."""
        data = bytearray()
        async for chunk in self.read_file_stream(agent, path, id=id, offset=offset, length=length):
            data += chunk
        return data.decode(encoding) if text else bytes(data)

    async def read_file_stream(self, agent: str | None, path: str, *, id: str | None = None,
                               offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """``read_file`` as the chunks arrive (64 KiB at most each)."""
        request: dict[str, Any] = {**_files.target(agent, id), "path": path, "offset": offset}
        if length is not None:
            request["length"] = length
        async for chunk in self._stream(Op.FILE_READ, request, raw=True):
            if isinstance(chunk, bytes):
                yield chunk

    async def write_file(self, agent: str | None, path: str, data: bytes | str, *, id: str | None = None,
                         append: bool = False, offset: int | None = None, create: bool = True,
                         exclusive: bool = False, mode: int | None = None) -> dict[str, Any]:
        """Write ``data`` (text as UTF-8) to a file of the agent's, as the agent: created (``mode``,
        default 0644; ``exclusive``: it must not exist) and truncated, unless ``append`` or
        ``offset``. Large data goes in 1 MiB requests. ``{path, written, size}``."""
        request = _files.write_request(agent, path, id=id, append=append, offset=offset, create=create,
                                       exclusive=exclusive, mode=mode)
        return await self._send_data(Op.FILE_WRITE, request, data.encode() if isinstance(data, str) else data)

    async def list_dir(self, agent: str | None, path: str = ".", *, id: str | None = None,
                       depth: int = 1) -> list[_files.FileEntry]:
        """A directory's entries (``depth`` levels down; paths relative to it), at most 10,000."""
        request = {**_files.target(agent, id), "path": path, "depth": depth}
        reply = await self._call(Op.FILE_LIST, request)
        return [_files.FileEntry.from_payload(entry) for entry in reply["entries"]]

    async def stat(self, agent: str | None, path: str, *, id: str | None = None,
                   follow: bool = False) -> _files.FileEntry:
        """One entry of the agent's view (a symlink itself unless ``follow``)."""
        request = {**_files.target(agent, id), "path": path, "follow": follow}
        return _files.FileEntry.from_payload(await self._call(Op.FILE_STAT, request))

    async def mkdir(self, agent: str | None, path: str, *, id: str | None = None, parents: bool = False,
                    mode: int | None = None) -> dict[str, Any]:
        """Make a directory (``parents``: and those missing above it; none made is no error)."""
        request: dict[str, Any] = {**_files.target(agent, id), "path": path, "parents": parents}
        if mode is not None:
            request["mode"] = mode
        return await self._call(Op.FILE_MKDIR, request)

    async def remove(self, agent: str | None, path: str, *, id: str | None = None,
                     recursive: bool = False) -> dict[str, Any]:
        """Remove a file, a symlink (not what it points to) or an empty directory (``recursive``: any)."""
        request = {**_files.target(agent, id), "path": path, "recursive": recursive}
        return await self._call(Op.FILE_REMOVE, request)

    async def rename(self, agent: str | None, path: str, to: str, *, id: str | None = None,
                     overwrite: bool = True) -> dict[str, Any]:
        """Rename within the agent's view (one file system; ``overwrite=False``: ``to`` must not exist)."""
        request = {**_files.target(agent, id), "path": path, "to": to, "overwrite": overwrite}
        return await self._call(Op.FILE_RENAME, request)

    async def upload_dir(self, agent: str | None, source: str | os.PathLike[str] | bytes, path: str, *,
                         id: str | None = None) -> dict[str, Any]:
        """Copy a local directory's contents (or ``source`` bytes: a tar archive) into the agent's
        directory ``path`` (made if missing) as one tar stream; ``{path, files, dirs, symlinks, bytes}``."""
        archive = source if isinstance(source, bytes) else _files.tar_directory(source)
        await self.mkdir(agent, path, id=id, parents=True)
        return await self._send_data(Op.FILE_UPLOAD, {**_files.target(agent, id), "path": path}, archive)

    async def download_dir(self, agent: str | None, path: str,
                           destination: str | os.PathLike[str] | None = None, *,
                           id: str | None = None) -> bytes:
        """The agent's directory ``path`` as one tar archive (returned), unpacked into the local
        ``destination`` if given (safely: nothing in it leaves ``destination``)."""
        data = bytearray()
        async for chunk in self._stream(Op.FILE_DOWNLOAD, {**_files.target(agent, id), "path": path},
                                        raw=True):
            if isinstance(chunk, bytes):
                data += chunk
        if destination is not None:
            _files.untar(bytes(data), destination)
        return bytes(data)

    async def watch(self, agent: str | None, path: str, *, id: str | None = None,
                    recursive: bool = False) -> AsyncIterator[_files.FileEvent]:
        """Changes under the agent's directory ``path`` as they happen: first a ``ready`` event (from
        then on nothing is missed), then ``created``, ``modified``, ``deleted``, ``moved``, and
        ``overflow`` when events were dropped because they were not read in time. Ends when the
        directory goes (or the agent does); stop it by leaving the loop and closing the iterator."""
        request = {**_files.target(agent, id), "path": path, "recursive": recursive}
        async for item in self._stream(Op.FILE_WATCH, request):
            if "event" in item:
                yield _files.FileEvent.from_payload(item)

    async def _send_data(self, op: int, request: dict[str, Any], data: bytes) -> dict[str, Any]:
        """A write or upload: one request, or a streamed one (FILE_DATA for the rest)."""
        pieces = _files.chunks(data)
        first = next(pieces)
        more = len(data) > len(first)
        reply = await self._call(op, {**request, "data_base64": _files.encoded(first), "more": more})
        handle = reply.get("handle")
        for piece in pieces:
            more = reply["written"] + len(piece) < len(data)
            reply = await self._call(Op.FILE_DATA, {"handle": handle, "data_base64": _files.encoded(piece),
                                                    "more": more})
        return reply

    # -- think -----------------------------------------------------------------------

    @takes(_think.think_request)
    async def think(self, request: dict[str, Any]) -> _think.ThinkReply:
        """Ask the model. Failures are in ``reply.error`` (``reply.raise_for_error()``
        raises them)."""
        reply = await self._call(Op.THINK, request)
        return _think.ThinkReply.from_payload(reply)

    @takes(_think.think_request)
    def think_stream(self, request: dict[str, Any]) -> _think.AsyncThinkStream:
        """``think``, iterating the answer's text as it is generated; ``.reply`` has the final
        answer."""
        return _think.AsyncThinkStream(self._stream(Op.THINK, {**request, "stream": True}))

    async def context(self, op: str, context_id: str | None = None, *,
                      system: str | None = None, new_id: str | None = None) -> Any:
        """Kernel-held conversations: ``op`` create, get, list, clear, fork or delete."""
        request = _think.context_request(op, context_id, system=system, new_id=new_id)
        return await self._call(Op.CONTEXT, request)

    async def usage(self) -> dict[str, Any]:
        """LLM calls and tokens per agent (all agents for an admin), and the scheduler's load."""
        return await self._call(Op.USAGE)

    @takes(_think.think_request)
    async def count_tokens(self, request: dict[str, Any]) -> _think.TokenCount:
        """The input tokens a ``think`` with the same arguments would be billed (``context``
        included); ``ThinkError`` if the model API cannot say (``unsupported`` on openai)."""
        reply = await self._call(Op.COUNT, request)
        return _think.TokenCount.from_payload(reply)

    async def embed(self, texts: str | Sequence[str], *, model: str | None = None,
                    task_type: str | None = None,
                    dimensions: int | None = None) -> _think.Embeddings:
        """One vector per text (at most 100 texts), charged to your token budget; ``ThinkError``
        on a model failure."""
        request = _think.embed_request(texts, model=model, task_type=task_type,
                                       dimensions=dimensions)
        return _think.Embeddings.from_payload(await self._call(Op.EMBED, request))

    async def models(self) -> _think.ModelList:
        """The models the kernel's provider serves, which of them you may use, and the defaults."""
        return _think.ModelList.from_payload(await self._call(Op.MODELS))

    # -- messaging -------------------------------------------------------------------

    async def send(self, to: str, body: Any) -> int:
        """Put ``body`` (any JSON) in the mailbox of ``to`` (agent name, id or registered name);
        returns the message id. ``Busy`` if that mailbox is full."""
        reply = await self._call(Op.SEND, _messaging.send_request(to, body))
        return reply_field(reply, "id", int)

    async def recv(self, timeout: float | None = None, *, name: str | None = None,
                   ack: bool = False, max_deliveries: int | None = None) -> dict[str, Any]:
        """The next message (``{"id", "from", "to", "body", "sent_at", "deliveries"}``),
        waiting up to ``timeout`` seconds (forever if None); ``Timeout`` if none came. It stays
        stored until ``ack(id)`` unless ``ack=True``. ``name`` reads a mailbox you registered.
        A message already delivered ``max_deliveries`` times without ACK (the kernel's
        ``messaging.max_deliveries`` if None) goes to the dead letters instead."""
        return await self._call(Op.RECV, _messaging.recv_request(timeout, name, ack, max_deliveries))

    async def ack(self, *ids: int, name: str | None = None) -> list[int]:
        """Delete delivered messages from your mailbox; returns the ids removed."""
        reply = await self._call(Op.ACK, _messaging.ack_request(ids, name))
        return reply_field(reply, "acked", list)

    async def dead_letters(self, mailbox: str | None = None, *, name: str | None = None,
                           limit: int = 100, project: str | None = None) -> dict[str, Any]:
        """The oldest ``limit`` dead letters (messages delivered ``max_deliveries`` times without
        ACK): ``{"dead": [{"id", "from", "to", "body", "sent_at", "deliveries", "dead_at"}],
        "more"}``. Your own mailbox's, or a name's you registered; ``mailbox="*"`` lists every
        mailbox you manage. An admin may name anyone's ``mailbox`` (as ``send``'s ``to``).
        ``project``: only that project's agents' mailboxes."""
        request = _messaging.dead_letters_request("list", mailbox=mailbox, name=name, limit=limit,
                                                  project=project)
        return await self._call(Op.DEAD_LETTERS, request)

    async def mailbox_stats(self, mailbox: str | None = "*", *, name: str | None = None,
                            limit: int = 100, project: str | None = None) -> dict[str, Any]:
        """How many messages wait (unacknowledged) and dead letters are kept in each mailbox
        you manage that holds any, deepest first: ``{"mailboxes": [{"mailbox", "depth",
        "dead"}], "more"}``. ``mailbox``, ``name`` and ``project`` choose as for
        ``dead_letters`` (``None``: your own mailbox only)."""
        request = _messaging.dead_letters_request("stats", mailbox=mailbox, name=name, limit=limit,
                                                  project=project)
        return await self._call(Op.DEAD_LETTERS, request)

    async def requeue(self, *ids: int) -> dict[str, Any]:
        """Put dead letters back at the end of their mailbox with their delivery count reset:
        ``{"requeued": [{"id", "new_id", "to"}], "missing", "full"}`` (a full mailbox keeps
        its dead letter)."""
        return await self._call(Op.DEAD_LETTERS, _messaging.dead_letters_request("requeue", ids=ids))

    async def drop_dead_letters(self, *ids: int) -> list[int]:
        """Delete dead letters for good; returns the ids deleted."""
        reply = await self._call(Op.DEAD_LETTERS, _messaging.dead_letters_request("drop", ids=ids))
        return reply_field(reply, "dropped", list)

    async def broadcast(self, body: Any) -> dict[str, Any]:
        """``body`` to every live agent and registered name but you: ``{"delivered", "full"}``."""
        return await self._call(Op.BROADCAST, {"body": body})

    async def register(self, name: str) -> dict[str, Any]:
        """Make ``name`` reach you (for an outside client: a mailbox read with ``recv(name=)``)."""
        return await self._call(Op.REGISTER, {"name": name})

    # -- events ----------------------------------------------------------------------

    async def subscribe(self, *topics: str) -> _messaging.AsyncSubscription:
        """The events on ``topics`` (``"jobs.done"``, ``"agent.*"``, ``"*"``) as they happen, to
        iterate over until the subscription's ``close()``."""
        frames = self._stream(Op.SUBSCRIBE, _messaging.subscribe_request(topics))
        first = await frames.__anext__()  # the confirmation: no event from now on is missed
        return _messaging.AsyncSubscription(frames, first, self.unsubscribe)

    async def unsubscribe(self, subscription: int) -> None:
        """End the stream of one of your subscriptions."""
        await self._call(Op.UNSUBSCRIBE, {"subscription": subscription})

    async def publish(self, topic: str, data: Any = None) -> None:
        """Send ``data`` to every subscriber of ``topic`` (``agent.*``/``kernel.*`` are the
        kernel's)."""
        await self._call(Op.PUBLISH, {"topic": topic, "data": data})

    # -- state -----------------------------------------------------------------------

    async def store(self, key: str, value: Any, *, ttl: float | None = None,
                    scope: str = "own", agent: str | None = None) -> int:
        """Durably set ``key`` to ``value`` (JSON), expiring after ``ttl`` seconds if given;
        returns its new version. ``scope="shared"`` uses the store shared between agents."""
        reply = await self._call(Op.STORE, _state.store_request(key, value, ttl, scope, agent))
        return reply_field(reply, "version", int)

    async def fetch(self, key: str, *, scope: str = "own", agent: str | None = None) -> Any:
        """The value of ``key``; ``NotFound`` if it is missing or expired."""
        reply = await self._call(Op.FETCH, _state.key_request(key, scope, agent))
        return reply["value"]

    async def delete(self, key: str, *, scope: str = "own", agent: str | None = None) -> bool:
        """Remove ``key``; True if it existed."""
        reply = await self._call(Op.DELETE, _state.key_request(key, scope, agent))
        return reply_field(reply, "deleted", bool)

    async def keys(self, prefix: str = "", *, limit: int = 1000, scope: str = "own",
                   agent: str | None = None) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        reply = await self._call(Op.KEYS, _state.keys_request(prefix, limit, scope, agent))
        return reply_field(reply, "keys", list)

    async def cas(self, key: str, expected: Any, value: Any, *, ttl: float | None = None,
                  scope: str = "own", agent: str | None = None) -> bool:
        """Set ``key`` to ``value`` only if it now equals ``expected``
        (``agentos.client.state.ABSENT``: only if it does not exist); True if it was set."""
        request = _state.cas_request(key, expected, value, ttl, scope, agent)
        reply = await self._call(Op.CAS, request)
        return reply_field(reply, "swapped", bool)

    # -- permissions, outside world ----------------------------------------------------

    async def get_perms(self, agent: str | None = None) -> dict[str, Any]:
        """Your capabilities (an admin may name another agent's id)."""
        return await self._call(Op.GET_PERMS, {} if agent is None else {"agent": agent})

    async def set_perms(self, capabilities: list[str], *, agent: str | None = None,
                        uid: int | None = None) -> dict[str, Any]:
        """Admin only: replace the capabilities of an agent (by id) or of an outside uid."""
        target: dict[str, Any] = {"agent": agent} if agent is not None else {"uid": uid}
        return await self._call(Op.SET_PERMS, {**target, "capabilities": list(capabilities)})

    async def http(self, url: str, *, method: str = "GET",
                   headers: dict[str, str] | None = None, body: str | None = None,
                   timeout: float | None = None,
                   max_bytes: int | None = None) -> dict[str, Any]:
        """Have the kernel fetch ``url`` (an allowed domain; needs ``http``):
        ``{"status", "url", "headers", "body" | "body_base64"}``."""
        args = {"url": url, "method": method, "headers": headers, "body": body,
                "timeout": timeout, "max_bytes": max_bytes}
        return await self._call(Op.HTTP, {k: v for k, v in args.items() if v is not None})

    # -- approvals -------------------------------------------------------------------

    async def approvals(self) -> list[dict[str, Any]]:
        """MCP tool calls waiting for a human that you may see (an admin: all; a user: those of
        its agents; an agent: its own). Each is ``{id, agent, name, tool, arguments, expires_at,
        ...}``."""
        reply = await self._call(Op.APPROVALS, {"action": "list"})
        return reply_field(reply, "approvals", list)

    async def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Let the waiting tool call run (its agent's owner or an admin only, never an agent)."""
        return await self._call(Op.APPROVALS, approval_request("approve", approval_id, reason))

    async def deny(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Refuse the waiting tool call; the model is told, with ``reason``."""
        return await self._call(Op.APPROVALS, approval_request("deny", approval_id, reason))

    # -- audit -----------------------------------------------------------------------

    async def audit(self, agent: str | None = None, *, follow: bool = False, limit: int = 100,
                    since: float | None = None, until: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Admin only: the last ``limit`` audit records (of ``agent``: a name, id or
        ``uid:<n>``; logged at ``since`` or later and before ``until``, Unix seconds), read
        across the rotated files too; with ``follow``, then every new one as it happens."""
        args: dict[str, Any] = {"follow": follow, "limit": limit}
        if agent is not None:
            args["agent"] = agent
        if since is not None:
            args["since"] = since
        if until is not None:
            args["until"] = until
        records = self._stream(Op.AUDIT, args)
        if follow:
            await records.__anext__()  # the confirmation: nothing logged from now on is missed
        return records


class AsyncSandbox:
    """A sandbox (``client.sandbox()``): an agent that idles until driven. ``exec`` runs commands
    in it; ``run_code`` runs Python cells in one long-lived interpreter inside it, whose names
    outlive each cell. Both are confined as the sandbox is. Leaving ``with`` kills it all."""

    def __init__(self, client: AsyncClientMethods, request: dict[str, Any]) -> None:
        self._client = client
        self._request = request
        #: The agent, as SPAWN answered (``{}`` until started).
        self.info: dict[str, Any] = {}
        self._interpreter: _sandbox.AsyncReader | None = None
        self._cells = 0
        #: An interpreter of this sandbox has ended: the next one starts with nothing defined.
        self._lost = False

    async def start(self) -> Self:
        """Spawn the sandbox (``with`` does); it is running once this returns."""
        if not self.info:
            self.info = await self._client._call(Op.SPAWN, self._request)
        return self

    @property
    def id(self) -> str:
        """The sandbox's agent id."""
        return reply_field(self.info, "id", str)

    @property
    def name(self) -> str:
        """The sandbox's agent name (``sandbox-<hex>`` unless given)."""
        return reply_field(self.info, "name", str)

    @property
    def isolation(self) -> dict[str, Any]:
        """What confines it, as SPAWN reports for any agent (namespaces, seccomp, cgroup...)."""
        return reply_field(self.info, "isolation", dict)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    async def exec(self, command: str | Sequence[str], *, stdin: bytes | str | None = None,
                   env: Mapping[str, str] | None = None, cwd: str | None = None,
                   timeout: float | str | None = None, user: int | str | None = None) -> _exec.ExecResult:
        """Run ``command`` (argv list, or a string for ``/bin/sh -c``) in the sandbox and wait:
        stdout, stderr, exit code or signal (the client's ``exec``; ``user="nobody"`` for a
        lesser uid)."""
        return await self._client.exec(None, command, id=self.id, stdin=stdin, env=env, cwd=cwd,
                                       timeout=timeout, user=user)

    def exec_stream(self, command: str | Sequence[str], *, stdin: bytes | str | None = None,
                    env: Mapping[str, str] | None = None, cwd: str | None = None,
                    timeout: float | str | None = None,
                    pty: tuple[int, int] | None = None, user: int | str | None = None) -> _exec.AsyncExecStream:
        """``exec`` as ``(stream, bytes)`` pairs as the command writes them (``exec_stream``)."""
        return self._client.exec_stream(None, command, id=self.id, stdin=stdin, env=env, cwd=cwd,
                                        timeout=timeout, pty=pty, user=user)

    async def exec_start(self, command: str | Sequence[str], *, stdin: bytes | str | None = None,
                         stdin_open: bool = False, env: Mapping[str, str] | None = None,
                         cwd: str | None = None, timeout: float | str | None = None,
                         pty: tuple[int, int] | None = None, user: int | str | None = None) -> dict[str, Any]:
        """Start ``command`` in the background: its handle for the client's ``exec_attach``,
        ``exec_input``, ``exec_signal`` and ``exec_wait``."""
        return await self._client.exec_start(None, command, id=self.id, stdin=stdin,
                                             stdin_open=stdin_open, env=env, cwd=cwd,
                                             timeout=timeout, pty=pty, user=user)

    async def pause(self) -> dict[str, Any]:
        """Freeze the sandbox, its execs and its interpreter (no CPU) until ``resume``."""
        return await self._client.pause(id=self.id)

    async def resume(self) -> dict[str, Any]:
        """Thaw what ``pause`` froze."""
        return await self._client.resume(id=self.id)

    async def kill(self) -> dict[str, Any]:
        """End the sandbox now, with everything running in it; its final state."""
        await self._close_interpreter()
        return await self._client.kill(id=self.id, grace=0)

    async def expose(self, port: int, *, tcp: bool = False) -> _ports.AsyncExposure:
        """``port`` on the sandbox's own loopback, reachable from this host by this caller only
        (``expose`` of the client): ``.address``, ``close()``."""
        return await self._client.expose(None, port, id=self.id, tcp=tcp)

    async def run_code(self, code: str, *, timeout: float | None = None,
                       stdin: bytes | str | None = None, max_output: int = _sandbox.MAX_OUTPUT,
                       on_stdout: _sandbox.OutputCallback | None = None,
                       on_stderr: _sandbox.OutputCallback | None = None) -> _sandbox.Execution:
        """Run a Python cell in the sandbox's interpreter (started on first use), which keeps its
        names between cells. Returns its stdout, stderr, ``result`` (the last expression's MIME
        bundle), ``displays``, ``error`` (name, value, traceback). ``on_stdout``/``on_stderr``
        get text as it is written (they may call ``interrupt``). Past ``timeout`` seconds the
        interpreter is killed (``timed_out``) and the next cell starts a new one (``state_lost``).
        ``stdin`` is the cell's standard input; output past ``max_output`` bytes per stream is
        counted in ``dropped``, not kept."""
        limit = _sandbox.cell_timeout(timeout)
        cell = _sandbox.Cell(self._cells + 1, code, stdin=stdin, max_output=max_output,
                             on_stdout=on_stdout, on_stderr=on_stderr,
                             state_lost=self._lost and self._interpreter is None)
        if self._interpreter is None:
            await self._start_interpreter()
        interpreter = self._interpreter
        assert interpreter is not None and interpreter.id is not None
        self._cells += 1
        deadline = None if limit is None else time.monotonic() + limit
        try:
            await self._client.exec_input(interpreter.id, cell.frame)
            while True:
                item = await interpreter.next(deadline)
                if item is None:
                    break
                for message in interpreter.take(item):
                    if cell.take(message):
                        return cell.execution
        except TimeoutError:
            assert limit is not None
            await self._close_interpreter()
            return cell.timed_out(limit)
        except _sandbox.BrokenInterpreter as exc:
            await self._close_interpreter()
            return cell.ended(f"the interpreter broke its protocol: {exc}")
        except SyscallError:
            await self._close_interpreter()
            raise
        await self._close_interpreter()
        return cell.ended(interpreter.how_it_ended(), interpreter.stderr.decode(errors="replace"))

    async def interrupt(self) -> bool:
        """SIGINT to the running cell: ``KeyboardInterrupt`` in it, the interpreter's names kept.
        False if no interpreter runs."""
        interpreter = self._interpreter
        if interpreter is None or interpreter.id is None:
            return False
        reply = await self._client.exec_signal(interpreter.id, "INT", group=False)
        return bool(reply["delivered"])

    async def _start_interpreter(self) -> None:
        python = (await self._client.hello())["capabilities"]["processes"]["python"]
        items = self._client._stream(Op.EXEC, _sandbox.interpreter_request(self.id, python), raw=True)
        interpreter = _sandbox.AsyncReader(items, self._client)
        self._interpreter = interpreter
        first = await interpreter.next(None)  # the exec's handle, sent as it starts
        interpreter.take(first)
        if interpreter.id is None:
            self._interpreter = None
            raise ConnectionClosed("the interpreter's exec ended before it started")

    async def _close_interpreter(self) -> None:
        """Kill the interpreter (if any) and forget it: its state is lost."""
        interpreter, self._interpreter = self._interpreter, None
        if interpreter is None:
            return
        self._lost = True
        await interpreter.close()
        if interpreter.result is None and interpreter.id is not None:
            try:
                await self._client.exec_signal(interpreter.id, "KILL")
            except NotFound:
                pass  # it ended (with its sandbox) in the meantime
