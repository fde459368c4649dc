"""Sandboxes and their code interpreter: payloads, cells and results, shared by both clients.

``Client.sandbox()`` / ``AsyncClient.sandbox()`` return a ``Sandbox`` / ``AsyncSandbox``
(in ``_async_api.py``, written once). This module holds what needs no I/O: the SPAWN of a
sandbox, the frames spoken with the interpreter (``agentos/sandbox/interpreter.py``), one
cell's accumulating result, and reading a stream with a deadline (the one piece each
transport does its own way: ``Reader`` and ``AsyncReader``).
"""
from __future__ import annotations

import asyncio
import codecs
import math
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InvalidArgument
from . import processes as _processes

#: The main program of every sandbox: it idles, reaps, and ends with its connection.
IDLE = str(Path(__file__).resolve().parents[1] / "sandbox" / "idle.py")
#: The interpreter ``run_code`` starts inside a sandbox (by EXEC, with the kernel's Python).
INTERPRETER = str(Path(__file__).resolve().parents[1] / "sandbox" / "interpreter.py")
#: Bytes of stdout and of stderr a cell keeps by default; the rest is counted in ``dropped``.
MAX_OUTPUT = 1 << 20
#: Bytes of rich outputs (``display``, figures) one cell may bring back.
MAX_RICH = 64 << 20
#: The largest frame accepted from an interpreter: a bigger one ends it as broken.
MAX_FRAME = 32 << 20
_HEADER = struct.Struct(">I")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def sandbox_request(template: str | None, *, name: str | None,
                    limits: Mapping[str, Any] | None, network: bool,
                    timeout: float | str | None, idle_timeout: float | str | None,
                    env: Mapping[str, str] | None, writable_paths: Sequence[str],
                    readonly_paths: Sequence[str], workspace: int | str | Mapping[str, Any] | None,
                    allow_degraded: bool,
                    volumes: Sequence[Mapping[str, Any]] | None = None,
                    project: str | None = None) -> dict[str, Any]:
    """The SPAWN of a sandbox: the idle program, sandboxed, under a unique name (in ``project``
    if named), from ``template`` (one of the kernel's ``sandbox.templates``, which checks it)."""
    return _processes.spawn_request(
        name or f"sandbox-{secrets.token_hex(6)}", IDLE, sandboxed=True, network=network,
        limits=limits, timeout=timeout, idle_timeout=idle_timeout, env=env,
        writable_paths=writable_paths, readonly_paths=readonly_paths, workspace=workspace,
        volumes=volumes, allow_degraded=allow_degraded, template=template, project=project)


def interpreter_request(sandbox_id: str, python: str) -> dict[str, Any]:
    """The EXEC of a sandbox's interpreter: streamed, its stdin kept open for cells."""
    return {"id": sandbox_id, "argv": [python, INTERPRETER], "stdin_open": True}


@dataclass
class CellError:
    """An exception a cell raised (or the interpreter's end: ``InterpreterDied``)."""

    name: str
    value: str
    #: The formatted traceback, one line per item, as Python prints it.
    traceback: list[str] = field(default_factory=list)
    #: The cell's frames: ``{filename, lineno, name, line}`` each, outermost first.
    frames: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Execution:
    """What one cell did."""

    cell: int
    stdout: str = ""
    stderr: str = ""
    #: The last expression's MIME bundle (``{"text/plain": repr, "image/png": bytes, ...}``),
    #: None if the cell ended in a statement or the value was None.
    result: dict[str, Any] | None = None
    #: Rich outputs in order: ``display(obj)`` calls and matplotlib figures, MIME bundles.
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: CellError | None = None
    #: The cell ran past its ``timeout``: the interpreter was killed, its state is gone.
    timed_out: bool = False
    #: This cell ran in a new interpreter after an earlier one ended: earlier names are gone.
    state_lost: bool = False
    #: Bytes not kept per stream (past ``max_output``; ``display`` past 64 MiB).
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str | None:
        """The result's ``text/plain`` (its ``repr``), if there is a result."""
        return None if self.result is None else self.result.get("text/plain")


class BrokenInterpreter(Exception):
    """The interpreter sent what is not a frame (a cell wrote to the protocol's fd)."""


class Frames:
    """Splits an interpreter's stdout into its msgpack frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise BrokenInterpreter(f"a frame of {size} bytes (at most {MAX_FRAME})")
            if len(self._buffer) < _HEADER.size + size:
                break
            body = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
            del self._buffer[:_HEADER.size + size]
            try:
                message = _DECODER.decode(body)
            except msgspec.DecodeError as exc:
                raise BrokenInterpreter(f"an undecodable frame: {exc}") from None
            if not isinstance(message, dict):
                raise BrokenInterpreter("a frame that is not a map")
            messages.append(message)
        return messages


OutputCallback = Callable[[str], Any]


class Cell:
    """One ``run_code`` call: its request frame, then its result as the frames come."""

    def __init__(self, number: int, code: str, *, stdin: bytes | str | None, max_output: int,
                 on_stdout: OutputCallback | None, on_stderr: OutputCallback | None,
                 state_lost: bool) -> None:
        if not isinstance(code, str):
            raise InvalidArgument("code must be a string of Python source", field="code")
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0:
            raise InvalidArgument("max_output must be a number of bytes >= 0", field="max_output")
        if isinstance(stdin, str):
            stdin = stdin.encode()
        elif stdin is not None and not isinstance(stdin, (bytes, bytearray)):
            raise InvalidArgument("stdin must be bytes or text", field="stdin")
        self.number = number
        self.frame = _frame({"n": number, "code": code, "stdin": bytes(stdin) if stdin else None,
                             "max_output": max_output})
        self.max_output = max_output
        self.execution = Execution(cell=number, state_lost=state_lost,
                                   dropped={"stdout": 0, "stderr": 0})
        self._callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")("replace")
                          for name in ("stdout", "stderr")}
        self._text: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._kept = {"stdout": 0, "stderr": 0}
        self._rich = 0

    def take(self, message: dict[str, Any]) -> bool:
        """Apply one frame of the interpreter's; True once the cell is done."""
        if message.get("n") != self.number:
            return False  # output of an earlier cell's leftover processes
        kind = message.get("t")
        if kind == "out" and message.get("s") in self._text:
            self._output(message["s"], bytes(message.get("d") or b""))
        elif kind == "display" and isinstance(message.get("data"), dict):
            size = sum(len(v) for v in message["data"].values() if isinstance(v, (str, bytes)))
            if self._rich + size > MAX_RICH:
                self.execution.dropped["display"] = self.execution.dropped.get("display", 0) + size
            else:
                self._rich += size
                self.execution.displays.append(message["data"])
        elif kind == "done":
            for name, count in (message.get("dropped") or {}).items():
                if name in self._kept and isinstance(count, int):
                    self.execution.dropped[name] += count
            result, error = message.get("result"), message.get("error")
            self.execution.result = result if isinstance(result, dict) else None
            if isinstance(error, dict):
                self.execution.error = CellError(
                    name=str(error.get("name")), value=str(error.get("value")),
                    traceback=list(error.get("traceback") or []), frames=list(error.get("frames") or []))
            self._finish()
            return True
        return False

    def _output(self, stream: str, data: bytes) -> None:
        kept = data[:max(self.max_output - self._kept[stream], 0)]
        self._kept[stream] += len(kept)
        self.execution.dropped[stream] += len(data) - len(kept)
        text = self._decoders[stream].decode(kept)
        if text:
            self._text[stream].append(text)
            callback = self._callbacks[stream]
            if callback is not None:
                callback(text)

    def _finish(self) -> None:
        for stream, parts in self._text.items():
            parts.append(self._decoders[stream].decode(b"", final=True))
            setattr(self.execution, stream, "".join(parts))

    def ended(self, how: str, detail: str = "") -> Execution:
        """The cell's result when the interpreter ended under it: ``how`` says why."""
        self.execution.error = CellError(name="InterpreterDied", value=how,
                                         traceback=detail.splitlines())
        self._finish()
        return self.execution

    def timed_out(self, timeout: float) -> Execution:
        self.execution.timed_out = True
        self.execution.error = CellError(name="TimeoutError",
                                         value=f"the cell ran past its timeout of {timeout:g} s; "
                                               "the interpreter was killed and its state is lost")
        self._finish()
        return self.execution


def cell_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and timeout > 0):
        raise InvalidArgument("timeout must be a number of seconds > 0", field="timeout")
    return float(timeout)


def _frame(message: dict[str, Any]) -> bytes:
    body = _ENCODER.encode(message)
    return _HEADER.pack(len(body)) + body


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _Interpreter:
    """A running interpreter: its exec handle, its frames, how it ended."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.frames = Frames()
        self.stderr = bytearray()  # what it wrote before taking fd 2 over: why it could not start
        self.result: dict[str, Any] | None = None

    def take(self, item: Any) -> list[dict[str, Any]]:
        """The frames in one item of the exec stream (its handle, stdout, stderr or end)."""
        if not isinstance(item, bytes):
            self.result = item
            return []
        tag, data = item[0], item[1:]
        if tag == 0:
            self.id = msgspec.json.decode(data)["id"]
        elif tag == 1:
            return self.frames.feed(data)
        elif len(self.stderr) < 65536:
            self.stderr += data[:65536]
        return []

    def how_it_ended(self) -> str:
        result = self.result or {}
        if result.get("oom_killed"):
            return "the interpreter was killed by the OOM killer (signal 9): the sandbox's memory limit"
        if result.get("signal"):
            return f"the interpreter was killed by signal {result['signal']}"
        if result:
            return f"the interpreter exited with code {result.get('exit_code')}"
        return "the interpreter's stream ended"


class Reader(_Interpreter):
    """The interpreter's exec stream, read by the blocking client with a deadline."""

    def __init__(self, items: Iterator[Any], client: Any) -> None:
        super().__init__()
        self._items = items
        self._sock = client._sock  # a wait is bounded by the socket's timeout: set it per read

    def next(self, deadline: float | None) -> Any:
        """The stream's next item, None at its end; ``TimeoutError`` past ``deadline``."""
        before = self._sock.gettimeout()
        left = _remaining(deadline)
        if left is not None:
            self._sock.settimeout(left if before is None else min(before, left))
        try:
            return next(self._items, None)
        finally:
            self._sock.settimeout(before)

    def close(self) -> None:
        self._items.close()  # type: ignore[attr-defined]


class AsyncReader(_Interpreter):
    """The interpreter's exec stream, read by the asyncio client with a deadline."""

    def __init__(self, items: AsyncIterator[Any], client: Any) -> None:
        super().__init__()
        self._items = items

    async def next(self, deadline: float | None) -> Any:
        """The stream's next item, None at its end; ``TimeoutError`` past ``deadline``."""
        try:
            return await asyncio.wait_for(anext(self._items), _remaining(deadline))
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        await self._items.aclose()  # type: ignore[attr-defined]
