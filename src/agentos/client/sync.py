"""``Client``: the blocking SDK. One socket, buffered reads, batched writes."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
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

_RECV_SIZE = 256 * 1024


class Client:
    """A blocking connection to the kernel.

    With no arguments it uses the connection the kernel handed this agent
    (``AGENTOS_FD``), else ``AGENTOS_SOCKET``, else the default socket path.
    Replies are matched by request id, so an open stream (``subscribe``,
    ``think_stream``) can be read while other calls are made.
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *, fd: int | None = None,
                 timeout: float | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._decoder = FrameDecoder(max_payload)
        self._ids = RequestIds()
        self._queues: dict[int, deque[Frame]] = {}
        #: Written ahead of the first request (in the same write): the HELLO declaring our limit.
        self._unsent = bytearray()
        declare_limit(self._unsent, self._ids, self._queues, max_payload)
        self._failure: BaseException | None = None
        self._sock = connect_socket(socket_path, fd)
        self._sock.settimeout(timeout)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()
        self._failure = self._failure or ConnectionClosed("client closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- primitives ------------------------------------------------------------------

    def _send(self, op: int, payload: bytes) -> int:
        if self._failure is not None:
            raise connection_error(self._failure)
        rid = self._ids.take(self._queues)
        buf = self._take_unsent()
        append_frame(buf, op, rid, payload)
        self._queues[rid] = deque()
        self._write(buf)
        return rid

    def _take_unsent(self) -> bytearray:
        buf, self._unsent = self._unsent, bytearray()
        return buf

    def _write(self, data: bytes | bytearray) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            for pending in read_pending(self._sock.fileno()):
                self._route(pending)
            self._fail(exc)
            raise connection_error(self._failure) from None

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _next_frame(self, rid: int) -> Frame:
        """The next frame for request ``rid``, reading (and routing others') as needed."""
        queue = self._queues[rid]
        while not queue:
            if self._failure is not None:
                raise connection_error(self._failure)
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise
            except OSError as exc:
                self._fail(exc)
                continue
            if not data:
                self._fail(ConnectionClosed("the kernel closed the connection"))
                continue
            self._route(data)
        return queue.popleft()

    def _route(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            target = self._queues.get(frame.request_id)
            if target is not None:
                target.append(frame)
            elif frame.flags & ERROR and frame.request_id == 0:
                # A connection-level error (protocol_error, busy): the kernel is about to hang up.
                try:
                    raise_error(frame.payload)
                except (RemoteProtocolError, SyscallError) as exc:
                    self._fail(exc)
                except Exception as exc:
                    self._fail(RemoteProtocolError(str(exc)))


    def _request(self, op: int, payload: bytes) -> memoryview:
        """Send one request, return its single reply's raw payload."""
        rid = self._send(op, payload)
        try:
            frame = self._next_frame(rid)
        finally:
            del self._queues[rid]
        if frame.flags & ERROR:
            raise_error(frame.payload)
        return frame.payload

    def _call(self, op: int, args: Any = None) -> Any:
        """Send a JSON request, return the JSON reply."""
        return decode_json(self._request(op, encode_payload(args)))

    def _stream(self, op: int, args: Any = None) -> Iterator[Any]:
        """Yield each STREAM chunk of a streamed reply, then the END payload if it has one."""
        rid = self._send(op, encode_payload(args))
        try:
            while True:
                last, value = stream_item(self._next_frame(rid))
                if not last or value is not None:
                    yield value
                if last:
                    return
        finally:
            del self._queues[rid]

    # -- core ----------------------------------------------------------------------

    def noop(self, payload: bytes = b"") -> bytes:
        """Round trip ``payload`` through the kernel (answered without entering Python)."""
        check_echo(payload, self._decoder.max_payload)
        return bytes(self._request(Op.NOOP, payload))

    def echo(self, text: str) -> str:
        """Seed compatibility: NOOP with a text payload."""
        return self.noop(text.encode()).decode()

    def noop_batch(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Pipeline many NOOPs: one write for all requests, replies read as they stream in."""
        if self._failure is not None:
            raise connection_error(self._failure)
        payloads = list(payloads)
        for payload in payloads:
            check_echo(payload, self._decoder.max_payload)
        buf = self._take_unsent()
        rids = []
        for payload in payloads:
            rid = self._ids.take(self._queues)
            self._queues[rid] = deque()
            append_frame(buf, Op.NOOP, rid, payload)
            rids.append(rid)
        try:
            self._write(buf)
            replies = []
            for rid in rids:
                frame = self._next_frame(rid)
                if frame.flags & ERROR:
                    raise_error(frame.payload)
                replies.append(bytes(frame.payload))
            return replies
        finally:
            for rid in rids:
                self._queues.pop(rid, None)

    def hello(self) -> dict[str, Any]:
        """Kernel and protocol version, served syscalls and this host's capabilities."""
        return self._call(Op.HELLO)

    # --- processes ---

    def spawn(self, name: str | None = None, script: str | os.PathLike[str] | None = None,
              **options: Any) -> dict[str, Any]:
        """Start an agent: a Python ``script``, or ``command=[...]``; options as
        ``agentos.client.processes.spawn_request`` (limits, sandboxed, env, ...).
        Returns ``{id, name, pid, status, isolation, ...}``."""
        return self._call(Op.SPAWN, _processes.spawn_request(name, script, **options))

    def kill(self, agent: str | None = None, **options: Any) -> dict[str, Any]:
        """Stop an agent by name (or ``id=``): SIGTERM, SIGKILL after ``grace``; returns its final state."""
        return self._call(Op.KILL, _processes.kill_request(agent, **options))

    def list_agents(self, status: str | list[str] | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Running and recently ended agents, with status, exit code and cgroup usage."""
        return self._call(Op.LIST, _processes.list_request(status, name))["agents"]

    def wait(self, agent: str | None = None, **options: Any) -> dict[str, Any]:
        """Block until the agent ends (or ``until="ready"``), at most ``timeout`` seconds."""
        return self._call(Op.WAIT, _processes.wait_request(agent, **options))

    def logs(self, agent: str | None = None, *, id: str | None = None, tail: int | None = None) -> str:
        """The agent's captured stdout and stderr (the last ``tail`` bytes, 64 KiB by default)."""
        return self._call(Op.LOGS, _processes.logs_request(agent, id=id, tail=tail))["data"]

    def follow_logs(self, agent: str | None = None, *, id: str | None = None,
                    tail: int | None = None) -> Iterator[str]:
        """Yield the agent's output as it is written, until the agent ends."""
        for chunk in self._stream(Op.LOGS, _processes.logs_request(agent, id=id, tail=tail, follow=True)):
            if "data" in chunk:
                yield chunk["data"]

    def ready(self) -> dict[str, Any]:
        """Tell the kernel this agent is up (WAIT ``until="ready"`` and supervisors see it)."""
        return self._call(Op.READY)

    # --- think ---

    def think(self, prompt: str | None = None, **options: Any) -> _think.ThinkReply:
        """Ask the model; options as ``agentos.client.think.OPTIONS`` (messages, system,
        temperature, functions, context, json, images, ...). Failures are in ``reply.error``."""
        return _think.ThinkReply.from_payload(self._call(Op.THINK, _think.think_request(prompt, **options)))

    def think_stream(self, prompt: str | None = None, **options: Any) -> _think.ThinkStream:
        """Iterate the answer's text as it is generated; ``.reply`` has the final answer."""
        return _think.ThinkStream(self._stream(Op.THINK, _think.think_request(prompt, stream=True, **options)))

    def context(self, op: str, context_id: str | None = None, *, system: str | None = None,
                new_id: str | None = None) -> Any:
        """Kernel-held conversations: ``op`` create, get, list, clear, fork or delete."""
        return self._call(Op.CONTEXT, _think.context_request(op, context_id, system=system, new_id=new_id))

    def usage(self) -> dict[str, Any]:
        """LLM calls and tokens per agent (all agents for an admin), and the scheduler's load."""
        return self._call(Op.USAGE)

    def count_tokens(self, prompt: str | None = None, **options: Any) -> _think.TokenCount:
        """The input tokens a ``think`` with the same arguments would be billed (``context``
        included); ``ThinkError`` if the model API cannot say (``unsupported`` on openai)."""
        return _think.TokenCount.from_payload(self._call(Op.COUNT, _think.think_request(prompt, **options)))

    def embed(self, texts: str | Sequence[str], *, model: str | None = None, task_type: str | None = None,
              dimensions: int | None = None) -> _think.Embeddings:
        """One vector per text (at most 100 texts), charged to your token budget; ``ThinkError``
        on a model failure."""
        return _think.Embeddings.from_payload(self._call(Op.EMBED, _think.embed_request(
            texts, model=model, task_type=task_type, dimensions=dimensions)))

    def models(self) -> _think.ModelList:
        """The models the kernel's provider serves, which of them you may use, and the defaults."""
        return _think.ModelList.from_payload(self._call(Op.MODELS))

    # --- messaging ---

    def send(self, to: str, body: Any) -> int:
        """Put ``body`` (any JSON) in the mailbox of ``to`` (agent name, id or registered name);
        returns the message id. ``Busy`` if that mailbox is full."""
        return self._call(Op.SEND, _messaging.send_request(to, body))["id"]

    def recv(self, timeout: float | None = None, *, name: str | None = None,
             ack: bool = False) -> dict[str, Any]:
        """The next message (``{"id", "from", "to", "body", "sent_at"}``), waiting up to
        ``timeout`` seconds (forever if None); ``Timeout`` if none came. It stays stored until
        ``ack(id)`` unless ``ack=True``. ``name`` reads a mailbox you registered."""
        return self._call(Op.RECV, _messaging.recv_request(timeout, name, ack))

    def ack(self, *ids: int, name: str | None = None) -> list[int]:
        """Delete delivered messages from your mailbox; returns the ids removed."""
        return self._call(Op.ACK, _messaging.ack_request(ids, name))["acked"]

    def broadcast(self, body: Any) -> dict[str, Any]:
        """``body`` to every live agent and registered name but you: ``{"delivered", "full"}``."""
        return self._call(Op.BROADCAST, {"body": body})

    def register(self, name: str) -> dict[str, Any]:
        """Make ``name`` reach you (for an outside client: a mailbox read with ``recv(name=)``)."""
        return self._call(Op.REGISTER, {"name": name})

    def subscribe(self, *topics: str) -> _messaging.Subscription:
        """Iterate over events on ``topics`` (``"jobs.done"``, ``"agent.*"``, ``"*"``) as they
        happen, until ``close()``."""
        frames = self._stream(Op.SUBSCRIBE, _messaging.subscribe_request(topics))
        return _messaging.Subscription(frames, self.unsubscribe)

    def unsubscribe(self, subscription: int) -> None:
        """End the stream of one of your subscriptions."""
        self._call(Op.UNSUBSCRIBE, {"subscription": subscription})

    def publish(self, topic: str, data: Any = None) -> None:
        """Send ``data`` to every subscriber of ``topic`` (``agent.*``/``kernel.*`` are the kernel's)."""
        self._call(Op.PUBLISH, {"topic": topic, "data": data})

    # --- state ---

    def store(self, key: str, value: Any, *, ttl: float | None = None, scope: str = "own",
              agent: str | None = None) -> int:
        """Durably set ``key`` to ``value`` (JSON), expiring after ``ttl`` seconds if given;
        returns its new version. ``scope="shared"`` uses the store shared between agents."""
        return self._call(Op.STORE, _state.store_request(key, value, ttl, scope, agent))["version"]

    def fetch(self, key: str, *, scope: str = "own", agent: str | None = None) -> Any:
        """The value of ``key``; ``NotFound`` if it is missing or expired."""
        return self._call(Op.FETCH, _state.key_request(key, scope, agent))["value"]

    def delete(self, key: str, *, scope: str = "own", agent: str | None = None) -> bool:
        """Remove ``key``; True if it existed."""
        return self._call(Op.DELETE, _state.key_request(key, scope, agent))["deleted"]

    def keys(self, prefix: str = "", *, limit: int = 1000, scope: str = "own",
             agent: str | None = None) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        return self._call(Op.KEYS, _state.keys_request(prefix, limit, scope, agent))["keys"]

    def cas(self, key: str, expected: Any, value: Any, *, ttl: float | None = None,
            scope: str = "own", agent: str | None = None) -> bool:
        """Set ``key`` to ``value`` only if it now equals ``expected`` (``agentos.client.state.ABSENT``: only
        if it does not exist); True if it was set."""
        return self._call(Op.CAS, _state.cas_request(key, expected, value, ttl, scope,
                                                    agent))["swapped"]

    # --- permissions ---

    def get_perms(self, agent: str | None = None) -> dict[str, Any]:
        """Your capabilities (an admin may name another agent's id)."""
        return self._call(Op.GET_PERMS, {} if agent is None else {"agent": agent})

    def set_perms(self, capabilities: list[str], *, agent: str | None = None,
                  uid: int | None = None) -> dict[str, Any]:
        """Admin only: replace the capabilities of an agent (by id) or of an outside uid."""
        target: dict[str, Any] = {"agent": agent} if agent is not None else {"uid": uid}
        return self._call(Op.SET_PERMS, {**target, "capabilities": list(capabilities)})

    def http(self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: str | None = None, timeout: float | None = None,
             max_bytes: int | None = None) -> dict[str, Any]:
        """Have the kernel fetch ``url`` (an allowed domain; needs ``http``):
        ``{"status", "url", "headers", "body" | "body_base64"}``."""
        args = {"url": url, "method": method, "headers": headers, "body": body,
                "timeout": timeout, "max_bytes": max_bytes}
        return self._call(Op.HTTP, {k: v for k, v in args.items() if v is not None})

    def audit(self, agent: str | None = None, *, follow: bool = False,
              limit: int = 100) -> Iterator[dict[str, Any]]:
        """Admin only: the last ``limit`` audit records (of ``agent``: a name, id or
        ``uid:<n>``); with ``follow``, then every new one as it happens."""
        args: dict[str, Any] = {"follow": follow, "limit": limit}
        if agent is not None:
            args["agent"] = agent
        records = self._stream(Op.AUDIT, args)
        if follow:
            next(records)  # the kernel's confirmation: nothing logged from now on is missed
        return records
