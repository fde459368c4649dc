"""``Client``: the blocking SDK. One socket, buffered reads, batched writes."""
from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ConnectionClosed, RemoteProtocolError
from ..protocol import DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, Op, append_frame
from . import think as _think
from . import processes as _processes
from ._common import (END, ERROR, STREAM, RequestIds, connect_socket, connection_error,
                      decode_json, encode_payload, raise_error)

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
        self._sock = connect_socket(socket_path, fd)
        self._sock.settimeout(timeout)
        self._decoder = FrameDecoder(max_payload)
        self._ids = RequestIds()
        self._queues: dict[int, deque[Frame]] = {}
        self._failure: BaseException | None = None

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
        buf = bytearray()
        append_frame(buf, op, rid, payload)
        self._queues[rid] = deque()
        self._write(buf)
        return rid

    def _write(self, data: bytes | bytearray) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
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
            for frame in self._decoder.feed(data):
                target = self._queues.get(frame.request_id)
                if target is not None:
                    target.append(frame)
                elif frame.flags & ERROR and frame.request_id == 0:
                    # A connection-level protocol error: the kernel is about to hang up.
                    try:
                        raise_error(frame.payload)
                    except RemoteProtocolError as exc:
                        self._fail(exc)
                    except Exception as exc:
                        self._fail(RemoteProtocolError(str(exc)))
        return queue.popleft()

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
                frame = self._next_frame(rid)
                if frame.flags & ERROR:
                    raise_error(frame.payload)
                if frame.flags & END or not frame.flags & STREAM:
                    if len(frame.payload):
                        yield decode_json(frame.payload)
                    return
                yield decode_json(frame.payload)
        finally:
            del self._queues[rid]

    # -- core ----------------------------------------------------------------------

    def noop(self, payload: bytes = b"") -> bytes:
        """Round trip ``payload`` through the kernel (answered without entering Python)."""
        return bytes(self._request(Op.NOOP, payload))

    def echo(self, text: str) -> str:
        """Seed compatibility: NOOP with a text payload."""
        return self.noop(text.encode()).decode()

    def noop_batch(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Pipeline many NOOPs: one write for all requests, replies read as they stream in."""
        if self._failure is not None:
            raise connection_error(self._failure)
        buf = bytearray()
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


    # --- messaging ---

    # --- state ---

    # --- permissions ---
