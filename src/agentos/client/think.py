"""THINK for both clients: request building, the reply, and streamed replies; COUNT, EMBED
and MODELS' requests and answers.

The clients' ``think`` / ``think_stream`` / ``context`` / ``usage`` / ``count_tokens`` /
``embed`` / ``models`` methods are thin wrappers over what is here, so the sync and async
SDKs cannot drift apart.
"""
from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import AgentOSError
from ..protocol.turns import rekeyed

CONTEXT_OPS = ("create", "get", "list", "clear", "fork", "delete")
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"%PDF", "application/pdf"))


class ThinkError(AgentOSError):
    """A THINK, COUNT, EMBED or MODELS the model API failed: ``kind`` is auth, invalid_request,
    rate_limited, unavailable, timeout, deadline_exceeded, budget_exhausted, not_configured,
    cancelled or unsupported. (A withheld answer is not an error: ``finish_reason`` ``safety``.)"""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('type')}: {error.get('message')}")
        self.kind = str(error.get("type"))
        self.message = str(error.get("message"))
        self.retry_after: float | None = error.get("retry_after")
        self.reason: str | None = error.get("reason")


@dataclass
class ThinkReply:
    """The answer to one THINK."""

    success: bool
    content: str | None
    #: ``{"prompt", "output", "total", "thoughts", "cached"}`` (ints) and ``"cost_usd"`` (float,
    #: or None when the kernel has no price for the model).
    tokens: dict[str, Any]
    finish_reason: str | None = None
    #: ``[{"id"?, "name", "args"}]`` the model wants run; answer with ``function_responses``.
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    #: ``{"type", "message", "retry_after"?, "reason"?}`` when ``success`` is false.
    error: dict[str, Any] | None = None
    #: The model turn verbatim, to put back into ``messages`` when you keep the history.
    turn: dict[str, Any] | None = None
    context: str | None = None
    #: ``[{model, error}]``: the models of a fallback chain that failed before ``model``.
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    #: ``{blocked, source?, reason?, ratings?}``: why the answer was withheld (``finish_reason``
    #: ``safety``), or the provider's ratings of it; None when it sent none.
    safety: dict[str, Any] | None = None
    #: With ``candidates=N``: ``[{content, function_calls, finish_reason, safety?}]`` for every
    #: candidate, the first being this answer itself.
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ThinkReply:
        names = cls.__dataclass_fields__
        # Fields a newer kernel sends that this SDK does not know are left out; the check costs
        # a third of the copy that leaves them out, which most answers do not need.
        known = payload if payload.keys() <= names.keys() else {
            k: v for k, v in payload.items() if k in names}
        reply = cls(**known)
        if reply.turn is not None:
            reply.turn = full_turn(reply.turn, reply.content or "", reply.function_calls)
        if reply.candidates:
            # The kernel sends the first candidate's content once: as the answer's own.
            first: dict[str, Any] = {"content": reply.content,
                                     "function_calls": reply.function_calls}
            if reply.safety is not None:
                first["safety"] = reply.safety
            reply.candidates = [{**reply.candidates[0], **first}, *reply.candidates[1:]]
        return reply

    def raise_for_error(self) -> ThinkReply:
        """Raise ``ThinkError`` if the call failed; returns self so calls can chain."""
        if not self.success:
            raise ThinkError(self.error or {"type": "unknown", "message": "THINK failed"})
        return self


def full_turn(turn: dict[str, Any], content: str, function_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The model turn as the provider sent it, from the answer's compact form.

    The kernel sends no text twice: a part's ``content_chars`` stands for the next that many
    characters of ``content``, its ``function_call`` for that entry of ``function_calls``.
    """
    parts: list[dict[str, Any]] = []
    cursor = 0
    for part in turn.get("parts") or []:
        if "content_chars" in part:
            end = cursor + int(part["content_chars"])
            part = rekeyed(part, "content_chars", "text", content[cursor:end])
            cursor = end
        elif "function_call" in part:
            part = rekeyed(part, "function_call", "functionCall",
                           dict(function_calls[int(part["function_call"])]))
        parts.append(part)
    return {**turn, "parts": parts}


def think_request(
        prompt: str | None = None, *,
        messages: Sequence[dict[str, Any]] | None = None,
        system: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_output_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        thinking_budget: int | None = None,
        thinking_level: Literal["minimal", "low", "medium", "high"] | None = None,
        include_thoughts: bool | None = None,
        json: bool | None = None,
        response_schema: dict[str, Any] | None = None,
        images: Sequence[str | os.PathLike[str] | bytes | dict[str, Any]] | None = None,
        functions: Sequence[Callable[..., Any] | dict[str, Any]] | None = None,
        function_mode: Literal["auto", "any", "none"] | None = None,
        allowed_functions: Sequence[str] | None = None,
        function_responses: Sequence[dict[str, Any]] | None = None,
        context: str | None = None,
        model: str | Sequence[str] | None = None,
        safety: dict[str, str] | Sequence[dict[str, str]] | None = None,
        candidates: int | None = None,
        timeout: float | None = None,
        tools: Literal["mcp"] | None = None) -> dict[str, Any]:
    """The JSON form of a THINK (and of a COUNT); an argument left None is not sent.

    Args:
        prompt: The user's text, the last turn of the conversation.
        messages: Earlier turns: ``{role, content}`` or ``{role, parts}`` (role user,
            model, assistant or system), before ``prompt``.
        system: The system instruction (the agent's ``llm.system`` if None).
        temperature: Sampling temperature, 0 to 2.
        top_p: Nucleus sampling: the probability mass sampled from, 0 to 1.
        top_k: Sample from the ``top_k`` likeliest tokens only.
        max_output_tokens: The most tokens the answer may have.
        stop: A string, or up to 5, that end the answer where generated.
        seed: Sample reproducibly, where the provider can.
        thinking_budget: Tokens the model may think for (0: none, -1: it decides).
        thinking_level: How much it thinks, instead of ``thinking_budget``.
        include_thoughts: Return the model's thought summaries in ``turn``.
        json: Answer in JSON (``content`` is a JSON text).
        response_schema: A JSON Schema the JSON answer follows.
        images: Images (or PDFs) for the model to read: paths, raw bytes (type sniffed),
            or ``{mime_type, data}`` with base64 data.
        functions: Functions the model may call: Python callables (declared from their
            signature and docstring) or declarations ``{name, description, parameters}``.
        function_mode: ``"auto"``: the model decides; ``"any"``: it must call one;
            ``"none"``: it may not.
        allowed_functions: With ``function_mode="any"``: the functions it may choose from.
        function_responses: The results of the calls it asked for:
            ``[{id?, name, response}]``, sent as the last user turn.
        context: A kernel-held conversation (``context("create")``) to continue and extend.
        model: A model, or a fallback chain tried in order (the agent's default if None).
        safety: Blocking thresholds: ``{category: threshold}`` or
            ``[{category, threshold}]``.
        candidates: Answers to generate (1 to 8; in ``reply.candidates``); not streamed.
        timeout: Seconds the whole call may take, retries included (``llm.deadline`` if
            None).
        tools: ``"mcp"``: offer the agent's MCP tools; the kernel runs the calls and answers
            once the model is done (``reply.tool_calls``; docs/mcp.md).
    """
    # The parameters, in their declared order: naming them again here would be one more
    # list of the options to keep in step.
    request: dict[str, Any] = {k: v for k, v in locals().items() if v is not None}
    if functions is not None:
        request["functions"] = [_declaration(f) for f in functions]
    if images is not None:
        request["images"] = [image_part(i) for i in images]
    return request


def context_request(op: str, context_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A CONTEXT request: ``op`` is create, get, list, clear, fork or delete."""
    if op not in CONTEXT_OPS:
        raise ValueError(f"context op must be one of {CONTEXT_OPS}, got {op!r}")
    request: dict[str, Any] = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
    if context_id is not None:
        request["id"] = context_id
    return request


def image_part(image: str | os.PathLike[str] | bytes | dict[str, Any]) -> dict[str, Any]:
    """``{"mime_type", "data"}`` from a path, raw bytes (type sniffed) or such a dict."""
    if isinstance(image, dict):
        return image
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
        if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            mime = "image/webp"
        if mime is None:
            raise ValueError("unknown image type: pass {'mime_type': ..., 'data': base64} instead")
    else:
        path = Path(image)
        data = path.read_bytes()
        mime = mimetypes.guess_type(path.name)[0]
        if mime is None:
            raise ValueError(f"cannot tell the type of {path}: pass {{'mime_type', 'data'}} instead")
    return {"mime_type": mime, "data": base64.b64encode(data).decode()}


def _declaration(function: Callable[..., Any] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(function, dict):
        return function
    from .tools import declaration
    return declaration(function)


class _StreamState:
    """What both stream flavours keep: the final reply and the function calls seen."""

    def __init__(self) -> None:
        self.reply: ThinkReply | None = None
        self.function_calls: list[dict[str, Any]] = []
        self._texts: list[str] = []

    def _take(self, item: Any) -> str | None:
        """Record one stream item; return its text delta, if it is one."""
        if isinstance(item, dict) and "success" in item:
            if "content" not in item:
                # A streamed answer's END leaves out the text its chunks carried.
                item = {**item, "content": "".join(self._texts)}
            self.reply = ThinkReply.from_payload(item)
        elif isinstance(item, dict) and "function_call" in item:
            self.function_calls.append(item["function_call"])
        elif isinstance(item, dict) and item.get("text"):
            self._texts.append(str(item["text"]))
            return self._texts[-1]
        return None


class ThinkStream(_StreamState):
    """Iterate text deltas as they arrive; ``reply`` holds the final answer afterwards."""

    def __init__(self, items: Iterator[Any]) -> None:
        super().__init__()
        self._items = items

    def __iter__(self) -> Iterator[str]:
        for item in self._items:
            text = self._take(item)
            if text:
                yield text


class AsyncThinkStream(_StreamState):
    """``async for`` text deltas; ``reply`` holds the final answer afterwards."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        super().__init__()
        self._items = items

    async def __aiter__(self) -> AsyncIterator[str]:
        async for item in self._items:
            text = self._take(item)
            if text:
                yield text


# --- COUNT, EMBED and MODELS ---------------------------------------------------------------

def answered(payload: dict[str, Any]) -> dict[str, Any]:
    """A COUNT, EMBED or MODELS answer that succeeded; a failed one raises ``ThinkError``."""
    if not payload.get("success"):
        raise ThinkError(payload.get("error") or {"type": "unknown", "message": "no answer"})
    return payload


@dataclass
class TokenCount:
    """What a THINK with the same arguments would be billed as input, on ``model``."""

    tokens: int
    model: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TokenCount:
        answer = answered(payload)
        return cls(tokens=int(answer["tokens"]), model=str(answer["model"]))


@dataclass
class Embeddings:
    """One vector per text, in the order of the texts."""

    vectors: list[list[float]]
    model: str
    #: Input tokens as the provider reported them; None when it reports none (the kernel
    #: then charged your budget its own estimate).
    tokens: int | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Embeddings:
        answer = answered(payload)
        return cls(vectors=answer["embeddings"], model=str(answer["model"]),
                   tokens=answer.get("tokens"))


@dataclass
class ModelInfo:
    """A model the kernel's provider serves; a limit the provider does not publish is None."""

    name: str
    display_name: str
    input_token_limit: int | None
    output_token_limit: int | None
    #: What it does, in the provider's words (``generateContent``, ``embedContent`` ...).
    methods: list[str]
    #: Whether you may name it in ``think``, ``count_tokens`` or ``embed``.
    allowed: bool


@dataclass
class ModelList:
    """MODELS' answer: what the provider serves, and the kernel's defaults."""

    models: list[ModelInfo]
    default: str
    embedding_default: str | None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ModelList:
        answer = answered(payload)
        names = ModelInfo.__dataclass_fields__
        return cls(models=[ModelInfo(**{k: v for k, v in m.items() if k in names})
                           for m in answer["models"]],
                   default=str(answer["default"]), embedding_default=answer.get("embedding_default"))


def embed_request(texts: str | Sequence[str], *, model: str | None = None,
                  task_type: str | None = None, dimensions: int | None = None) -> dict[str, Any]:
    """An EMBED request: one string is ``text``, a sequence ``texts`` (at most 100)."""
    request: dict[str, Any] = {"text": texts} if isinstance(texts, str) else {"texts": list(texts)}
    for key, value in (("model", model), ("task_type", task_type.upper() if task_type else None),
                       ("dimensions", dimensions)):
        if value is not None:
            request[key] = value
    return request
