"""EXEC's payloads, its streamed output and its result, shared by ``Client`` and ``AsyncClient``.

An EXEC stream's chunks are bytes: ``0x00`` + JSON ``{id, pid, agent}`` first, then
``0x01`` (stdout) or ``0x02`` (stderr) + the output as written; END is the result.
"""
from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_STREAMS = {1: "stdout", 2: "stderr"}


@dataclass
class ExecResult:
    """How an exec'd command ended, and what it wrote."""

    id: str
    exit_code: int | None
    #: The signal that killed it (9 after a ``timeout``), or None.
    signal: int | None
    timed_out: bool
    stdout: bytes = b""
    stderr: bytes = b""
    #: Bytes a background exec dropped per stream while no one was attached.
    dropped: dict[str, int] = field(default_factory=dict)
    #: The kernel's OOM killer took it (the agent's memory limit): ``signal`` is 9.
    oom_killed: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], stdout: bytes = b"", stderr: bytes = b"") -> ExecResult:
        return cls(id=payload["id"], exit_code=payload.get("exit_code"), signal=payload.get("signal"),
                   timed_out=bool(payload.get("timed_out")), stdout=stdout, stderr=stderr,
                   dropped=dict(payload.get("dropped") or {}), oom_killed=bool(payload.get("oom_killed")),
                   info=dict(payload))


def exec_request(agent: str | None, command: str | Sequence[str], *, id: str | None = None,
                 stdin: bytes | str | None = None, stdin_open: bool = False,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeout: float | str | None = None, background: bool = False,
                 pty: tuple[int, int] | None = None, user: int | str | None = None) -> dict[str, Any]:
    """The EXEC payload: ``command`` is an argv list, or a string run by ``/bin/sh -c``.

    ``cwd`` is a path in the agent's view (relative: to the agent's own working directory),
    never made absolute here. ``pty``: ``(rows, cols)`` of a terminal instead of pipes.
    ``user``: the agent's own (None) or ``"nobody"``; the kernel refuses any other.
    """
    payload: dict[str, Any] = {"id": id} if id is not None else {"name": agent}
    if isinstance(command, str):
        payload["cmd"] = command
    else:
        payload["argv"] = list(command)
    if isinstance(stdin, str):
        payload["stdin"] = stdin
    elif stdin is not None:
        payload["stdin_base64"] = base64.b64encode(stdin).decode()
    if stdin_open:
        payload["stdin_open"] = True
    if env:
        payload["env"] = dict(env)
    if cwd is not None:
        payload["cwd"] = cwd
    if timeout is not None:
        payload["timeout"] = timeout
    if background:
        payload["background"] = True
    if pty is not None:
        payload["pty"] = {"rows": pty[0], "cols": pty[1]}
    if user is not None:
        payload["user"] = user
    return payload


def input_request(exec_id: str, data: bytes | str, eof: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"exec": exec_id}
    if isinstance(data, str):
        payload["data"] = data
    elif data:
        payload["data_base64"] = base64.b64encode(data).decode()
    if eof:
        payload["eof"] = True
    return payload


class _ExecState:
    """What an exec stream learned: its handle first, its result last."""

    def __init__(self) -> None:
        self.id: str | None = None
        #: The process's pid in the agent's view.
        self.pid: int | None = None
        self.result: ExecResult | None = None

    def _take(self, item: Any) -> tuple[str, bytes] | None:
        if isinstance(item, bytes):
            tag, data = item[0], item[1:]
            if tag == 0:
                info = json.loads(data)
                self.id, self.pid = info["id"], info.get("pid")
                return None
            return _STREAMS.get(tag, str(tag)), data
        self.result = ExecResult.from_payload(item)
        return None


class ExecStream(_ExecState):
    """Iterate ``(stream, data)`` pairs (``"stdout"``/``"stderr"``, bytes) as the command writes
    them; ``id`` is its handle (for input and signals), ``result`` how it ended, afterwards."""

    def __init__(self, items: Iterator[Any]) -> None:
        super().__init__()
        self._items = items

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for item in self._items:
            pair = self._take(item)
            if pair is not None:
                yield pair


class AsyncExecStream(_ExecState):
    """``async for`` ``(stream, data)`` pairs (``"stdout"``/``"stderr"``, bytes); ``id`` is its
    handle (for input and signals), ``result`` how it ended, afterwards."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        super().__init__()
        self._items = items

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        async for item in self._items:
            pair = self._take(item)
            if pair is not None:
                yield pair
