"""Function calling for agents: Python functions as tools, and the call loop.

``declaration(fn)`` derives a function declaration from the signature's type
hints and the docstring (first paragraph = description; ``Args:`` entries or
``:param x:`` lines = parameter descriptions). ``Toolbox.run`` thinks, runs the
functions the model asks for, sends their results back, and repeats until the
model answers in text or ``max_steps`` rounds have passed.
"""
from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import AgentOSError
from ..protocol.function_calls import function_response_parts

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .sync import Client
    from .think import ThinkReply

_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}


class StepLimitExceeded(AgentOSError):
    """The model still asked for function calls after ``max_steps`` rounds."""

    def __init__(self, steps: int, reply: ThinkReply) -> None:
        super().__init__(f"the model still asked for function calls after {steps} steps: "
                         f"{[c['name'] for c in reply.function_calls]}")
        self.reply = reply


def declaration(fn: Callable[..., Any]) -> dict[str, Any]:
    """The function declaration (name, description, JSON Schema parameters) of ``fn``."""
    hints = typing.get_type_hints(fn)
    doc = inspect.getdoc(fn) or ""
    described = _param_docs(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args/**kwargs cannot be declared to a model")
        if name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {name!r} needs a type hint")
        schema = schema_of(hints[name])
        if name in described:
            schema["description"] = described[name]
        properties[name] = schema
        if param.default is param.empty:
            required.append(name)
    out: dict[str, Any] = {"name": fn.__name__,
                           "description": doc.split("\n\n", 1)[0].strip() or fn.__name__,
                           "parameters": {"type": "object", "properties": properties}}
    if required:
        out["parameters"]["required"] = required
    return out


def schema_of(hint: Any) -> dict[str, Any]:
    """JSON Schema for a type hint: primitives, list/dict, Optional, Literal, Enum."""
    if hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [str(m.value) for m in hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return {"type": _PRIMITIVES.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return {**schema_of(kinds[0]), "nullable": True}
        return {"anyOf": [schema_of(a) for a in kinds]}
    if hint is list or origin is list:
        return {"type": "array", "items": schema_of(args[0]) if args else {"type": "string"}}
    if hint is dict or origin is dict:
        return {"type": "object"}
    raise TypeError(f"type {hint!r} cannot be declared to a model "
                    "(use str, int, float, bool, list, dict, Literal, Enum or Optional)")


def _param_docs(doc: str) -> dict[str, str]:
    found = dict(re.findall(r"^\s*:param\s+(?:\w+\s+)?(\w+):\s*(.+)$", doc, re.MULTILINE))
    section = re.search(r"^\s*(?:Args|Arguments|Parameters):\s*\n((?:\s+.+\n?)+)", doc, re.MULTILINE)
    if section:
        for name, text in re.findall(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", section.group(1), re.MULTILINE):
            found.setdefault(name, text.strip())
    return found


class Toolbox:
    """Python functions the model may call, and the loop that lets it."""

    def __init__(self, *functions: Callable[..., Any]) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._declarations: list[dict[str, Any]] = []
        for fn in functions:
            self.register(fn)

    def register(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn`` (usable as a decorator)."""
        if fn.__name__ in self._functions:
            raise ValueError(f"a tool named {fn.__name__!r} is already registered")
        self._declarations.append(declaration(fn))
        self._functions[fn.__name__] = fn
        return fn

    def declarations(self) -> list[dict[str, Any]]:
        return list(self._declarations)

    def run(self, client: Client, prompt: str, *, max_steps: int = 8, **options: Any) -> ThinkReply:
        """Think until the model answers without calling a function; returns that reply."""
        loop = _Loop(self, prompt, options)
        reply = client.think(prompt, functions=self._declarations, **options)
        for _ in range(max_steps):
            if not reply.success or not reply.function_calls:
                return reply
            results = [self._invoke(call) for call in reply.function_calls]
            for result in results:
                if inspect.iscoroutine(result["response"]):
                    result["response"].close()
                    raise TypeError(f"tool {result['name']!r} is async: use Toolbox.arun with an "
                                    "AsyncClient")
            reply = client.think(**loop.next_request(reply, results))
        return loop.finished(reply, max_steps)

    async def arun(self, client: AsyncClient, prompt: str, *, max_steps: int = 8,
                   **options: Any) -> ThinkReply:
        """``run`` for the AsyncClient; coroutine functions are awaited."""
        loop = _Loop(self, prompt, options)
        reply = await client.think(prompt, functions=self._declarations, **options)
        for _ in range(max_steps):
            if not reply.success or not reply.function_calls:
                return reply
            results = []
            for call in reply.function_calls:
                result = self._invoke(call)
                if inspect.isawaitable(result.get("response")):
                    result = await self._settle(call, result["response"])
                results.append(result)
            reply = await client.think(**loop.next_request(reply, results))
        return loop.finished(reply, max_steps)

    def _invoke(self, call: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": call["name"]}
        if call.get("id"):
            out["id"] = call["id"]
        fn = self._functions.get(call["name"])
        if fn is None:
            out["response"] = {"error": f"no function named {call['name']!r}"}
            return out
        try:
            value = fn(**(call.get("args") or {}))
        except Exception as exc:  # noqa: BLE001 - the model sees its mistake and can try again
            out["response"] = {"error": f"{type(exc).__name__}: {exc}"}
            return out
        out["response"] = value if inspect.isawaitable(value) else {"result": value}
        return out

    @staticmethod
    async def _settle(call: dict[str, Any], pending: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"name": call["name"], **({"id": call["id"]} if call.get("id") else {})}
        try:
            out["response"] = {"result": await pending}
        except Exception as exc:  # noqa: BLE001 - reported to the model like a sync tool's
            out["response"] = {"error": f"{type(exc).__name__}: {exc}"}
        return out


class _Loop:
    """The conversation of one tool run: kept by the kernel with ``context``, else here."""

    def __init__(self, box: Toolbox, prompt: str, options: dict[str, Any]) -> None:
        self.box = box
        self.options = options
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        self.pending: list[dict[str, Any]] = []

    def next_request(self, reply: ThinkReply, results: list[dict[str, Any]]) -> dict[str, Any]:
        request = {**self.options, "functions": self.box.declarations(),
                   "function_responses": results}
        if self.options.get("context"):
            return request
        # The model turn goes back verbatim: Gemini checks its thought signatures.
        if self.pending:
            self.messages.append({"role": "user", "parts": self.pending})
        self.messages.append({"role": "model", "parts": (reply.turn or {}).get("parts", [])})
        self.pending = function_response_parts(results)
        request["messages"] = list(self.messages)
        return request

    @staticmethod
    def finished(reply: ThinkReply, steps: int) -> ThinkReply:
        if reply.success and reply.function_calls:
            raise StepLimitExceeded(steps, reply)
        return reply
