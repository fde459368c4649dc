"""``AsyncClient``: the asyncio SDK. Many requests in flight on one connection."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..errors import ConnectionClosed, RemoteProtocolError, SyscallError
from ..protocol import DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, Op, append_frame
from . import messaging as _messaging
from . import processes as _processes
from . import state as _state
from . import think as _think
from ..protocol.payload import decode_json, encode_payload
from ._common import (ERROR, RequestIds, check_echo, connect_socket, connection_error, declare_limit,
                      raise_error, read_pending, stream_item)


class _Protocol(asyncio.Protocol):
    """Routes incoming frames to the future or stream queue of their request id."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._fd = transport.get_extra_info("socket").fileno()

    def data_received(self, data: bytes) -> None:
        client = self.client
        try:
            frames = client._decoder.feed(data)
        except Exception as exc:
            client._fail(exc)
            return
        for frame in frames:
            client._route(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            # A failed write closes the transport before it reads what the kernel sent last:
            # usually the frame that says why it hung up (busy, protocol_error). The socket
            # is still open here; take what it holds without waiting.
            for data in read_pending(self._fd):
                self.data_received(data)
        self.client._fail(exc or ConnectionClosed("the kernel closed the connection"))


class AsyncClient:
    """An asyncio connection to the kernel; create it with ``await AsyncClient.connect()``.

    Requests are written in batches (one write per loop iteration however many
    coroutines call at once) and replies are matched by request id.
    """

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._decoder = FrameDecoder(max_payload)
        self._ids = RequestIds()
        self._waiters: dict[int, asyncio.Future[Frame] | asyncio.Queue[Frame]] = {}
        self._out = bytearray()
        # Flushed with the first request: the HELLO declaring our limit.
        declare_limit(self._out, self._ids, self._waiters, max_payload)
        self._flush_scheduled = False
        self._failure: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def connect(cls, socket_path: str | os.PathLike[str] | None = None, *,
                      fd: int | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD) -> AsyncClient:
        """Connect like ``Client()``: ``fd``, ``AGENTOS_FD``, a path, ``AGENTOS_SOCKET``, default."""
        self = cls(max_payload=max_payload)
        sock = connect_socket(socket_path, fd)
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_unix_connection(lambda: _Protocol(self), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        return self

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionClosed("client closed"))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        err = connection_error(self._failure)
        for waiter in self._waiters.values():
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(err)  # type: ignore[arg-type]
            elif not waiter.done():
                waiter.set_exception(err)
        self._waiters.clear()

    def _route(self, frame: Frame) -> None:
        waiter = self._waiters.get(frame.request_id)
        if waiter is None:
            if frame.flags & ERROR and frame.request_id == 0:
                try:
                    raise_error(frame.payload)
                except Exception as exc:
                    # A connection-level error (protocol_error, busy) keeps its type.
                    self._fail(exc if isinstance(exc, (RemoteProtocolError, SyscallError))
                               else RemoteProtocolError(str(exc)))
            return
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(frame)
        else:
            del self._waiters[frame.request_id]
            if not waiter.done():
                waiter.set_result(frame)

    def _send(self, op: int, payload: bytes, waiter: asyncio.Future[Frame] | asyncio.Queue[Frame]) -> int:
        if self._failure is not None:
            raise connection_error(self._failure)
        rid = self._ids.take(self._waiters)
        self._waiters[rid] = waiter
        append_frame(self._out, op, rid, payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        return rid

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and self._failure is None:
            self._transport.write(bytes(self._out))
        self._out.clear()

    async def _request(self, op: int, payload: bytes) -> memoryview:
        assert self._loop is not None
        fut: asyncio.Future[Frame] = self._loop.create_future()
        rid = self._send(op, payload, fut)
        try:
            frame = await fut
        finally:
            self._waiters.pop(rid, None)
        if frame.flags & ERROR:
            raise_error(frame.payload)
        return frame.payload

    async def _call(self, op: int, args: Any = None) -> Any:
        """Send a JSON request, return the JSON reply."""
        return decode_json(await self._request(op, encode_payload(args)))

    async def _stream(self, op: int, args: Any = None) -> AsyncIterator[Any]:
        """Yield each STREAM chunk of a streamed reply, then the END payload if it has one."""
        queue: asyncio.Queue[Frame] = asyncio.Queue()
        rid = self._send(op, encode_payload(args), queue)
        try:
            while True:
                frame = await queue.get()
                if isinstance(frame, BaseException):
                    raise frame
                last, value = stream_item(frame)
                if not last or value is not None:
                    yield value
                if last:
                    return
        finally:
            self._waiters.pop(rid, None)

    # -- core ----------------------------------------------------------------------

    async def noop(self, payload: bytes = b"") -> bytes:
        """Round trip ``payload`` through the kernel."""
        check_echo(payload, self._decoder.max_payload)
        return bytes(await self._request(Op.NOOP, payload))

    async def echo(self, text: str) -> str:
        """Seed compatibility: NOOP with a text payload."""
        return (await self.noop(text.encode())).decode()

    async def hello(self) -> dict[str, Any]:
        """Kernel and protocol version, served syscalls and this host's capabilities."""
        return await self._call(Op.HELLO)

    # --- processes ---

    async def spawn(self, name: str | None = None, script: str | os.PathLike[str] | None = None,
                    **options: Any) -> dict[str, Any]:
        """Start an agent (see ``Client.spawn``)."""
        return await self._call(Op.SPAWN, _processes.spawn_request(name, script, **options))

    async def kill(self, agent: str | None = None, **options: Any) -> dict[str, Any]:
        """Stop an agent (see ``Client.kill``)."""
        return await self._call(Op.KILL, _processes.kill_request(agent, **options))

    async def list_agents(self, status: str | list[str] | None = None,
                          name: str | None = None) -> list[dict[str, Any]]:
        """Running and recently ended agents (see ``Client.list_agents``)."""
        return (await self._call(Op.LIST, _processes.list_request(status, name)))["agents"]

    async def wait(self, agent: str | None = None, **options: Any) -> dict[str, Any]:
        """Wait for an agent to end or become ready (see ``Client.wait``)."""
        return await self._call(Op.WAIT, _processes.wait_request(agent, **options))

    async def logs(self, agent: str | None = None, *, id: str | None = None,
                   tail: int | None = None) -> str:
        """The agent's captured output (see ``Client.logs``)."""
        return (await self._call(Op.LOGS, _processes.logs_request(agent, id=id, tail=tail)))["data"]

    async def follow_logs(self, agent: str | None = None, *, id: str | None = None,
                          tail: int | None = None) -> AsyncIterator[str]:
        """Yield the agent's output as it is written, until the agent ends."""
        async for chunk in self._stream(Op.LOGS, _processes.logs_request(agent, id=id, tail=tail,
                                                                         follow=True)):
            if "data" in chunk:
                yield chunk["data"]

    async def ready(self) -> dict[str, Any]:
        """Tell the kernel this agent is up (see ``Client.ready``)."""
        return await self._call(Op.READY)

    # --- think ---

    async def think(self, prompt: str | None = None, **options: Any) -> _think.ThinkReply:
        """Ask the model; options as ``agentos.client.think.OPTIONS`` (messages, system,
        temperature, functions, context, json, images, ...). Failures are in ``reply.error``."""
        return _think.ThinkReply.from_payload(await self._call(Op.THINK, _think.think_request(prompt, **options)))

    def think_stream(self, prompt: str | None = None, **options: Any) -> _think.AsyncThinkStream:
        """Iterate the answer's text as it is generated; ``.reply`` has the final answer."""
        return _think.AsyncThinkStream(self._stream(Op.THINK, _think.think_request(prompt, stream=True, **options)))

    async def context(self, op: str, context_id: str | None = None, *, system: str | None = None,
                new_id: str | None = None) -> Any:
        """Kernel-held conversations: ``op`` create, get, list, clear, fork or delete."""
        return await self._call(Op.CONTEXT, _think.context_request(op, context_id, system=system, new_id=new_id))

    async def usage(self) -> dict[str, Any]:
        """LLM calls and tokens per agent (all agents for an admin), and the scheduler's load."""
        return await self._call(Op.USAGE)

    async def count_tokens(self, prompt: str | None = None, **options: Any) -> _think.TokenCount:
        """The input tokens a ``think`` with the same arguments would be billed (``context``
        included); ``ThinkError`` if the model API cannot say (``unsupported`` on openai)."""
        return _think.TokenCount.from_payload(await self._call(Op.COUNT, _think.think_request(prompt, **options)))

    async def embed(self, texts: str | Sequence[str], *, model: str | None = None,
                    task_type: str | None = None, dimensions: int | None = None) -> _think.Embeddings:
        """One vector per text (at most 100 texts), charged to your token budget; ``ThinkError``
        on a model failure."""
        return _think.Embeddings.from_payload(await self._call(Op.EMBED, _think.embed_request(
            texts, model=model, task_type=task_type, dimensions=dimensions)))

    async def models(self) -> _think.ModelList:
        """The models the kernel's provider serves, which of them you may use, and the defaults."""
        return _think.ModelList.from_payload(await self._call(Op.MODELS))

    # --- messaging ---

    async def send(self, to: str, body: Any) -> int:
        """Put ``body`` (any JSON) in the mailbox of ``to`` (agent name, id or registered name);
        returns the message id. ``Busy`` if that mailbox is full."""
        return (await self._call(Op.SEND, _messaging.send_request(to, body)))["id"]

    async def recv(self, timeout: float | None = None, *, name: str | None = None,
                   ack: bool = False) -> dict[str, Any]:
        """The next message (``{"id", "from", "to", "body", "sent_at"}``), waiting up to
        ``timeout`` seconds (forever if None); ``Timeout`` if none came. It stays stored until
        ``ack(id)`` unless ``ack=True``. ``name`` reads a mailbox you registered."""
        return await self._call(Op.RECV, _messaging.recv_request(timeout, name, ack))

    async def ack(self, *ids: int, name: str | None = None) -> list[int]:
        """Delete delivered messages from your mailbox; returns the ids removed."""
        return (await self._call(Op.ACK, _messaging.ack_request(ids, name)))["acked"]

    async def broadcast(self, body: Any) -> dict[str, Any]:
        """``body`` to every live agent and registered name but you: ``{"delivered", "full"}``."""
        return await self._call(Op.BROADCAST, {"body": body})

    async def register(self, name: str) -> dict[str, Any]:
        """Make ``name`` reach you (for an outside client: a mailbox read with ``recv(name=)``)."""
        return await self._call(Op.REGISTER, {"name": name})

    async def subscribe(self, *topics: str) -> _messaging.AsyncSubscription:
        """``async for`` over events on ``topics`` (``"jobs.done"``, ``"agent.*"``, ``"*"``) as
        they happen, until ``await close()``."""
        frames = self._stream(Op.SUBSCRIBE, _messaging.subscribe_request(topics))
        first = await frames.__anext__()
        return _messaging.AsyncSubscription(frames, first, self.unsubscribe)

    async def unsubscribe(self, subscription: int) -> None:
        """End the stream of one of your subscriptions."""
        await self._call(Op.UNSUBSCRIBE, {"subscription": subscription})

    async def publish(self, topic: str, data: Any = None) -> None:
        """Send ``data`` to every subscriber of ``topic`` (``agent.*``/``kernel.*`` are the kernel's)."""
        await self._call(Op.PUBLISH, {"topic": topic, "data": data})

    # --- state ---

    async def store(self, key: str, value: Any, *, ttl: float | None = None, scope: str = "own",
                    agent: str | None = None) -> int:
        """Durably set ``key`` to ``value`` (JSON), expiring after ``ttl`` seconds if given;
        returns its new version. ``scope="shared"`` uses the store shared between agents."""
        return (await self._call(Op.STORE, _state.store_request(key, value, ttl, scope, agent)))["version"]

    async def fetch(self, key: str, *, scope: str = "own", agent: str | None = None) -> Any:
        """The value of ``key``; ``NotFound`` if it is missing or expired."""
        return (await self._call(Op.FETCH, _state.key_request(key, scope, agent)))["value"]

    async def delete(self, key: str, *, scope: str = "own", agent: str | None = None) -> bool:
        """Remove ``key``; True if it existed."""
        return (await self._call(Op.DELETE, _state.key_request(key, scope, agent)))["deleted"]

    async def keys(self, prefix: str = "", *, limit: int = 1000, scope: str = "own",
                   agent: str | None = None) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        return (await self._call(Op.KEYS, _state.keys_request(prefix, limit, scope, agent)))["keys"]

    async def cas(self, key: str, expected: Any, value: Any, *, ttl: float | None = None,
                  scope: str = "own", agent: str | None = None) -> bool:
        """Set ``key`` to ``value`` only if it now equals ``expected`` (``agentos.client.state.ABSENT``: only
        if it does not exist); True if it was set."""
        return (await self._call(Op.CAS, _state.cas_request(key, expected, value, ttl, scope,
                                                    agent)))["swapped"]

    # --- permissions ---

    async def get_perms(self, agent: str | None = None) -> dict[str, Any]:
        """Your capabilities (an admin may name another agent's id)."""
        return await self._call(Op.GET_PERMS, {} if agent is None else {"agent": agent})

    async def set_perms(self, capabilities: list[str], *, agent: str | None = None,
                        uid: int | None = None) -> dict[str, Any]:
        """Admin only: replace the capabilities of an agent (by id) or of an outside uid."""
        target: dict[str, Any] = {"agent": agent} if agent is not None else {"uid": uid}
        return await self._call(Op.SET_PERMS, {**target, "capabilities": list(capabilities)})

    async def http(self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                   body: str | None = None, timeout: float | None = None,
                   max_bytes: int | None = None) -> dict[str, Any]:
        """Have the kernel fetch ``url`` (an allowed domain; needs ``http``):
        ``{"status", "url", "headers", "body" | "body_base64"}``."""
        args = {"url": url, "method": method, "headers": headers, "body": body,
                "timeout": timeout, "max_bytes": max_bytes}
        return await self._call(Op.HTTP, {k: v for k, v in args.items() if v is not None})

    async def audit(self, agent: str | None = None, *, follow: bool = False,
                    limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Admin only: the last ``limit`` audit records (of ``agent``: a name, id or
        ``uid:<n>``); with ``follow``, then every new one as it happens."""
        args: dict[str, Any] = {"follow": follow, "limit": limit}
        if agent is not None:
            args["agent"] = agent
        records = self._stream(Op.AUDIT, args)
        if follow:
            await records.__anext__()  # the kernel's confirmation: nothing logged from now on is missed
        return records
