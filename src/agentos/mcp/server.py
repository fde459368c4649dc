"""agentos as an MCP server: the kernel's sandboxes as tools, each MCP session owning its own.

``agentos mcp`` is a client of the kernel with the identity of the uid that runs it, narrowed by
its ``Policy`` (which tools, limits, network, how many sandboxes). The kernel cannot tell two MCP
sessions of one server apart (both are the same uid), so this server does: every sandbox is
recorded under the session that created it, every tool looks sandboxes up in the caller's own
session only, and a session's sandboxes are killed when it ends. What a session is depends on the
transport (docs/mcp.md#sessions): the stdio connection; a Streamable HTTP session
(``Mcp-Session-Id``, 2025-11-25); or, for stateless 2026-07-28 HTTP requests, the bearer token.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import posixpath
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from .. import __version__
from ..client import AsyncClient
from ..client._async_api import AsyncSandbox
from ..client.sandbox import sandbox_request
from ..errors import AgentOSError, NotFound, SyscallError
from ..units import parse_bytes, parse_cpu
from . import server_tasks
from .server_tools import SANDBOX_TOOLS, STATE_TOOLS, THINK_TOOLS, ToolError, check_arguments, tools

log = logging.getLogger("agentos.mcp.server")

INSTRUCTIONS = (
    "agentos runs code in isolated Linux sandboxes. Call sandbox_create first and pass the name it "
    "returns as `sandbox` to exec, run_code and the files_* tools; sandbox_kill when done. Sandboxes "
    "belong to this session and end with it.")
#: Bytes of stdout and of stderr an exec result keeps (the rest is counted as dropped).
MAX_OUTPUT = 1 << 20
#: Bytes files_read returns at most in one call (read the rest with offset).
MAX_READ = 8 << 20
#: Entries files_list returns at most.
MAX_ENTRIES = 1000
DEFAULT_TOOL_TIMEOUT = 60.0
#: Tools that may run long: answered as a task to clients that take the Tasks extension.
LONG_TOOLS = frozenset({"exec", "run_code"})
#: Capabilities a server may be given, and what each turns on.
SANDBOX_CAPABILITIES = frozenset({"spawn", "kill"})
KNOWN_CAPABILITIES = SANDBOX_CAPABILITIES | {"think", "state"}
_LIMITS: dict[str, Callable[[Any], float]] = {"memory": parse_bytes, "tmp": parse_bytes, "cpu": parse_cpu,
                                              "pids": int}


@dataclass(frozen=True)
class Policy:
    """What this server lets its MCP clients do: never more than its own uid may."""

    #: ``spawn`` and ``kill`` (the sandbox tools), ``think``, ``state``.
    capabilities: frozenset[str] = SANDBOX_CAPABILITIES
    #: Default and maximum limits of every sandbox (``memory``, ``cpu``, ``pids``, ``tmp``).
    limits: Mapping[str, Any] = field(default_factory=lambda: {"memory": "512Mi", "pids": 256})
    allow_network: bool = False
    max_sandboxes: int = 4
    #: A sandbox nobody used for this long is killed; so is a stateless session's last.
    idle_timeout: float = 600.0
    #: The longest a sandbox may live (the kernel stops it then, even if this server is gone).
    sandbox_timeout: float = 3600.0

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - KNOWN_CAPABILITIES
        if unknown:
            raise ValueError(f"capabilities: unknown {sorted(unknown)} (known: {sorted(KNOWN_CAPABILITIES)})")
        for key, value in self.limits.items():
            if key not in _LIMITS:
                raise ValueError(f"limits.{key}: unknown (known: {', '.join(_LIMITS)})")
            try:
                _LIMITS[key](value)
            except (TypeError, ValueError, AgentOSError) as exc:
                raise ValueError(f"limits.{key}: {exc}") from None
        for key in ("max_sandboxes", "idle_timeout", "sandbox_timeout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key}: must be a number > 0, got {value!r}")

    def narrow(self, asked: Mapping[str, Any] | None) -> dict[str, Any]:
        """A sandbox's limits: the policy's, each lowered where ``asked`` lowers it."""
        limits = dict(self.limits)
        for key, value in (asked or {}).items():
            try:
                wanted = _LIMITS[key](value)
            except (TypeError, ValueError, AgentOSError) as exc:
                raise ToolError(f"invalid arguments: limits.{key}: {exc}") from None
            if key in self.limits and wanted > _LIMITS[key](self.limits[key]):
                raise ToolError(f"limits.{key}: {value!r} is more than this server allows ({self.limits[key]!r})")
            limits[key] = value
        return limits


@dataclass
class Owned:
    """A sandbox and when it was last used; ``busy`` while a tool is running in it."""

    sandbox: AsyncSandbox
    template: str | None
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    #: One Python cell at a time: the interpreter is one process.
    cells: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Session:
    """One MCP session's sandboxes, in a kernel project of its own."""

    key: str
    project: str
    #: Ends when idle (no protocol session to end it): stateless HTTP.
    stateless: bool
    sandboxes: dict[str, Owned] = field(default_factory=dict)
    #: Creations under way, counted against ``max_sandboxes`` before their SPAWN answers.
    pending: int = 0
    last_used: float = field(default_factory=time.monotonic)

    def get(self, name: str) -> Owned:
        owned = self.sandboxes.get(name)
        if owned is None:
            # The same answer whether the name exists in another session or nowhere.
            raise ToolError(f"no sandbox {name!r} in this session (sandbox_list shows yours)")
        return owned


def _connection(ctx: ServerRequestContext[Any, Any]) -> Any:
    # The SDK keeps the per-client Connection (its session id and its teardown stack) on the
    # request's ServerSession only; it is the one hook that runs when a protocol session ends.
    return ctx.session._connection


def _result(structured: dict[str, Any], *extra: types.ContentBlock) -> types.CallToolResult:
    # The JSON again as text: clients that ignore structuredContent still get everything.
    text = types.TextContent(type="text", text=json.dumps(structured, ensure_ascii=False))
    return types.CallToolResult(content=[text, *extra], structured_content=structured, is_error=False)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _text(data: bytes | bytearray) -> str:
    return data.decode("utf-8", errors="replace")


class SandboxServer:
    """The MCP server: its tools, its sessions and their sandboxes, over one kernel connection."""

    def __init__(self, client: AsyncClient, policy: Policy) -> None:
        self.client = client
        self.policy = policy
        self.sessions: dict[str, Session] = {}
        self.tasks = server_tasks.Tasks()
        table = dict(SANDBOX_TOOLS)
        if "think" in policy.capabilities:
            table.update(THINK_TOOLS)
        if "state" in policy.capabilities:
            table.update(STATE_TOOLS)
        self._tools = tools(table)
        self._runners: dict[str, Callable[[Session, dict[str, Any]], Awaitable[types.CallToolResult]]] = {
            name: getattr(self, f"_tool_{name}") for name in table}
        self.mcp: Server[Any] = Server(
            "agentos", version=__version__, instructions=INSTRUCTIONS, on_list_tools=self._list_tools,
            # A Tasks-extension CreateTaskResult is a shape the SDK's handler type does not name; its
            # runner passes it through (an extension resultType is the extension's to own).
            on_call_tool=self._call_tool)  # type: ignore[arg-type]
        self.mcp.extensions = {server_tasks.EXTENSION: {}}
        self.mcp.add_request_handler("tasks/get", server_tasks.TaskIdParams, self._task_get)
        self.mcp.add_request_handler("tasks/cancel", server_tasks.TaskIdParams, self._task_cancel)
        self.mcp.add_request_handler("tasks/update", server_tasks.TaskUpdateParams, self._task_update)

    # -- sessions ---------------------------------------------------------------------

    def session(self, ctx: ServerRequestContext[Any, Any]) -> Session:
        """The caller's session, made on its first tool call."""
        request = ctx.request
        connection = None
        if request is None:
            key = "stdio"  # one client per process: the connection is the session
        else:
            # The HTTP front authenticated the request: the token's principal is on it.
            principal = request.scope["user"].display_name
            connection = _connection(ctx)
            key = principal if connection.session_id is None else f"{principal} {connection.session_id}"
        session = self.sessions.get(key)
        if session is None:
            stateless = request is not None and connection is not None and connection.session_id is None
            session = Session(key=key, project=f"mcp-{secrets.token_hex(6)}", stateless=stateless)
            self.sessions[key] = session
            if connection is not None and not stateless:
                connection.exit_stack.push_async_callback(self.end_session, key)
            log.info("session %s: sandboxes in project %s", key.split(" ")[0], session.project)
        session.last_used = time.monotonic()
        return session

    async def end_session(self, key: str) -> None:
        """Kill a session's sandboxes and cancel its tasks: nothing of it outlives it."""
        session = self.sessions.pop(key, None)
        self.tasks.end(key)
        if session is not None and session.sandboxes:
            owned = list(session.sandboxes.values())
            session.sandboxes.clear()
            await asyncio.gather(*(self._kill(o) for o in owned))
            log.info("session ended: killed %d sandbox(es)", len(owned))

    async def close(self) -> None:
        """End every session (the server is stopping)."""
        await asyncio.gather(*(self.end_session(key) for key in list(self.sessions)))

    async def reap(self) -> None:
        """Kill sandboxes idle past the policy's ``idle_timeout``; forget empty idle stateless sessions."""
        while True:
            await asyncio.sleep(min(self.policy.idle_timeout / 4, 30.0))
            await self.reap_once()

    async def reap_once(self) -> None:
        now = time.monotonic()
        idle = self.policy.idle_timeout
        for session in list(self.sessions.values()):
            for name, owned in list(session.sandboxes.items()):
                if owned.busy == 0 and now - owned.last_used > idle:
                    del session.sandboxes[name]
                    log.info("killing idle sandbox %s", name)
                    await self._kill(owned)
            if session.stateless and not session.sandboxes and now - session.last_used > idle:
                self.sessions.pop(session.key, None)
                self.tasks.end(session.key)
        self.tasks.prune()

    async def _kill(self, owned: Owned) -> None:
        try:
            await owned.sandbox.kill()
        except NotFound:
            pass  # it had ended (its timeout) already
        except (AgentOSError, OSError) as exc:
            log.warning("could not kill sandbox %s: %s", owned.sandbox.name, exc)

    # -- MCP handlers -----------------------------------------------------------------

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any],
                          params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self._tools)

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any],
                         params: types.CallToolRequestParams) -> types.CallToolResult | dict[str, Any]:
        runner = self._runners.get(params.name)
        if runner is None:
            return _error(f"unknown tool {params.name!r} (tools/list shows the tools this server offers)")
        try:
            arguments = check_arguments(params.name, params.arguments)
            session = self.session(ctx)
        except ToolError as exc:
            return _error(str(exc))
        if params.name in LONG_TOOLS and server_tasks.Tasks.wanted(ctx):
            return self.tasks.start(session.key, self._run(runner, session, arguments))
        return await self._run(runner, session, arguments)

    async def _run(self, runner: Callable[[Session, dict[str, Any]], Awaitable[types.CallToolResult]],
                   session: Session, arguments: dict[str, Any]) -> types.CallToolResult:
        """A tool's result; every failure a tool error the model can read, never a crash."""
        owned = session.sandboxes.get(arguments.get("sandbox", ""))
        if owned is not None:
            owned.busy += 1
        try:
            return await runner(session, arguments)
        except ToolError as exc:
            return _error(str(exc))
        except SyscallError as exc:
            return _error(f"{exc.code.value}: {exc}")
        except (AgentOSError, OSError) as exc:
            return _error(f"the kernel could not be reached: {exc}")
        except Exception:
            log.exception("tool call failed")
            return _error("internal error in agentos mcp (logged on its side)")
        finally:
            if owned is not None:
                owned.busy -= 1
                owned.last_used = time.monotonic()

    async def _task_get(self, ctx: ServerRequestContext[Any, Any], params: server_tasks.TaskIdParams) -> dict[str, Any]:
        return self.tasks.find(self.session(ctx).key, params.task_id).wire()

    async def _task_cancel(self, ctx: ServerRequestContext[Any, Any],
                           params: server_tasks.TaskIdParams) -> dict[str, Any]:
        self.tasks.cancel(self.session(ctx).key, params.task_id)
        return {}

    async def _task_update(self, ctx: ServerRequestContext[Any, Any],
                           params: server_tasks.TaskUpdateParams) -> dict[str, Any]:
        self.tasks.find(self.session(ctx).key, params.task_id)  # no tool of ours asks for input
        return {}

    # -- the tools --------------------------------------------------------------------

    async def _tool_sandbox_create(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        policy = self.policy
        if len(session.sandboxes) + session.pending >= policy.max_sandboxes:
            raise ToolError(f"this session has {policy.max_sandboxes} sandboxes, the most this server allows: "
                            "sandbox_kill one first")
        network = bool(args.get("network", False))
        if network and not policy.allow_network:
            raise ToolError("network: this server gives sandboxes no network (agentos mcp --allow-network)")
        timeout = args.get("timeout", policy.sandbox_timeout)
        if timeout > policy.sandbox_timeout:
            raise ToolError(f"timeout: at most {policy.sandbox_timeout:g} seconds on this server")
        template = args.get("template")
        request = sandbox_request(template, name=None, limits=policy.narrow(args.get("limits")), network=network,
                                  timeout=timeout, idle_timeout=None, env=None, writable_paths=(),
                                  readonly_paths=(), workspace=None, allow_degraded=False,
                                  project=session.project)
        # The code a model runs in it holds no capability: no THINK on this user's budget, no messages.
        request["capabilities"] = []
        sandbox = AsyncSandbox(self.client, request)
        session.pending += 1
        try:
            await sandbox.start()
        finally:
            session.pending -= 1
        if self.sessions.get(session.key) is not session:  # the session ended while it started
            await self._kill(Owned(sandbox, template))
            raise ToolError("this session ended")
        session.sandboxes[sandbox.name] = Owned(sandbox, template)
        return _result({"sandbox": sandbox.name, "template": template, "network": network, "timeout": timeout,
                        "limits": request.get("limits"), "isolation": sandbox.isolation})

    async def _tool_exec(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        command = args.get("argv") or args["cmd"]
        stream = self.client.exec_stream(None, command, id=owned.sandbox.id, stdin=args.get("stdin"),
                                         env=args.get("env"), cwd=args.get("cwd"),
                                         timeout=args.get("timeout", DEFAULT_TOOL_TIMEOUT))
        output = {"stdout": bytearray(), "stderr": bytearray()}
        dropped = {"stdout": 0, "stderr": 0}
        async for stream_name, data in stream:
            room = MAX_OUTPUT - len(output[stream_name])
            output[stream_name] += data[:max(room, 0)]
            dropped[stream_name] += max(len(data) - max(room, 0), 0)
        result = stream.result
        assert result is not None
        structured: dict[str, Any] = {"exit_code": result.exit_code, "signal": result.signal,
                                      "timed_out": result.timed_out, "stdout": _text(output["stdout"]),
                                      "stderr": _text(output["stderr"])}
        if any(dropped.values()):
            structured["dropped_bytes"] = dropped
        return _result(structured)

    async def _tool_run_code(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        async with owned.cells:
            execution = await owned.sandbox.run_code(args["code"], timeout=args.get("timeout", DEFAULT_TOOL_TIMEOUT))
        images: list[types.ContentBlock] = []
        displays = []
        for bundle in [*execution.displays, *([execution.result] if execution.result else [])]:
            for mime in ("image/png", "image/jpeg"):
                data = bundle.get(mime)
                if data is not None:
                    encoded = base64.b64encode(data).decode() if isinstance(data, bytes) else str(data)
                    images.append(types.ImageContent(type="image", data=encoded, mime_type=mime))
            if bundle is not execution.result and "text/plain" in bundle:
                displays.append(bundle["text/plain"])
        error = execution.error
        structured: dict[str, Any] = {
            "stdout": execution.stdout, "stderr": execution.stderr, "result": execution.text,
            "displays": displays, "timed_out": execution.timed_out, "state_lost": execution.state_lost,
            "error": None if error is None else {"name": error.name, "value": error.value,
                                                 "traceback": error.traceback}}
        if any(execution.dropped.values()):
            structured["dropped_bytes"] = execution.dropped
        return _result(structured, *images)

    async def _tool_files_read(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        offset = args.get("offset", 0)
        size = (await self.client.stat(None, args["path"], id=owned.sandbox.id, follow=True)).size
        length = min(args.get("length", MAX_READ), MAX_READ, max(size - offset, 0))
        data = await self.client.read_file(None, args["path"], id=owned.sandbox.id, offset=offset, length=length)
        assert isinstance(data, bytes)
        try:
            content, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(data).decode(), "base64"
        return _result({"path": args["path"], "size": size, "offset": offset, "length": len(data),
                        "truncated": offset + len(data) < size, "encoding": encoding, "content": content})

    async def _tool_files_write(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        if args.get("encoding") == "base64":
            try:
                data = base64.b64decode(args["content"], validate=True)
            except binascii.Error:
                raise ToolError("invalid arguments: content: not base64") from None
        else:
            data = args["content"].encode()
        sandbox_id, append = owned.sandbox.id, bool(args.get("append", False))
        try:
            reply = await self.client.write_file(None, args["path"], data, id=sandbox_id, append=append)
        except NotFound:
            # A model writes src/app/main.py before any src/app exists: make the directories, once.
            parent = posixpath.dirname(args["path"].rstrip("/"))
            if not parent:
                raise
            await self.client.mkdir(None, parent, id=sandbox_id, parents=True)
            reply = await self.client.write_file(None, args["path"], data, id=sandbox_id, append=append)
        return _result({"path": reply["path"], "written": reply["written"], "size": reply["size"]})

    async def _tool_files_list(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        entries = await self.client.list_dir(None, args.get("path", "."), id=owned.sandbox.id,
                                             depth=args.get("depth", 1))
        return _result({"path": args.get("path", "."), "truncated": len(entries) > MAX_ENTRIES,
                        "entries": [{"path": e.path, "type": e.type, "size": e.size}
                                    for e in entries[:MAX_ENTRIES]]})

    async def _tool_sandbox_kill(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        owned = session.get(args["sandbox"])
        del session.sandboxes[args["sandbox"]]
        try:
            reply = await owned.sandbox.kill()
        except NotFound:
            return _result({"sandbox": args["sandbox"], "status": "ended"})
        return _result({"sandbox": args["sandbox"], "status": reply.get("status", "killed")})

    async def _tool_sandbox_list(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        running = {agent["id"]: agent for agent in await self.client.list_agents(project=session.project)}
        listed = []
        for name, owned in session.sandboxes.items():
            agent = running.get(owned.sandbox.id, {})
            listed.append({"sandbox": name, "template": owned.template, "status": agent.get("status", "ended"),
                           "created": owned.created})
        return _result({"sandboxes": listed})

    async def _tool_think(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        reply = await self.client.think(args["prompt"], system=args.get("system"), model=args.get("model"),
                                        max_output_tokens=args.get("max_output_tokens"))
        if not reply.success:
            raise ToolError(f"the model call failed: {(reply.error or {}).get('message', 'no answer')}")
        return _result({"text": reply.content or "", "model": reply.model, "tokens": reply.tokens})

    # State is the server uid's own store: each session's keys live under its own prefix.

    def _key(self, session: Session, key: str) -> str:
        return f"{session.project}/{key}"

    async def _tool_state_get(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        return _result({"key": args["key"], "value": await self.client.fetch(self._key(session, args["key"]))})

    async def _tool_state_set(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        await self.client.store(self._key(session, args["key"]), args["value"], ttl=args.get("ttl"))
        return _result({"key": args["key"], "stored": True})

    async def _tool_state_delete(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        return _result({"key": args["key"], "deleted": await self.client.delete(self._key(session, args["key"]))})

    async def _tool_state_keys(self, session: Session, args: dict[str, Any]) -> types.CallToolResult:
        prefix = self._key(session, "")
        keys = await self.client.keys(prefix + args.get("prefix", ""))
        return _result({"keys": [key[len(prefix):] for key in keys]})


@contextlib.asynccontextmanager
async def running(socket: str | os.PathLike[str] | None, policy: Policy) -> AsyncIterator[SandboxServer]:
    """A ``SandboxServer`` on a kernel connection, its idle reaper running, everything ended on exit."""
    client = await AsyncClient.connect(socket)
    try:
        held = set((await client.get_perms())["capabilities"])
        wanted = {"state_own" if c == "state" else c for c in policy.capabilities}
        missing = wanted - held
        if missing:
            raise ValueError(f"capabilities: the kernel does not grant this uid {sorted(missing)}")
        server = SandboxServer(client, policy)
        reaper = asyncio.get_running_loop().create_task(server.reap())
        try:
            yield server
        finally:
            reaper.cancel()
            await server.close()
    finally:
        await client.close()
