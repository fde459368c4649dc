"""Scripted replies for the fake model servers, and the deterministic token count they use."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Reply:
    """One scripted answer, or one injected fault, served to the next matching request.

    The same reply renders as one JSON body or as ``chunks`` SSE events whose
    texts concatenate to ``text``; the fakes decide which from the request.
    """

    text: str = ""
    #: ``[{"name": ..., "args": {...}}]``; ids are added by the fake (``call_<n>``).
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "STOP"
    #: A thought signature: on the first function call part, or on a last empty text part.
    thought_signature: str | None = None
    #: Thought-summary text: a ``thought: true`` part when the request asks ``includeThoughts``
    #: (OpenAI: counted as reasoning tokens only).
    thoughts: str = ""
    #: Thinking tokens billed; 0 means ``count_tokens(thoughts)``.
    thoughts_tokens: int = 0
    #: Texts of candidates 1, 2, ... when the request asks for more than one (else they repeat ``text``).
    alternatives: list[str] = field(default_factory=list)
    #: Gemini ``safetyRatings`` for a SAFETY answer or a blocked prompt (a default set when None).
    safety_ratings: list[dict[str, Any]] | None = None
    #: Number of SSE events the text is cut into when streamed.
    chunks: int = 3
    #: Gemini ``promptFeedback.blockReason``: the prompt is refused with HTTP 200 and no candidates.
    block_reason: str | None = None
    # --- faults ---
    #: Answer with this HTTP status and a provider-shaped error body.
    status: int | None = None
    message: str = ""
    #: With status 429/503: the ``google.rpc.RetryInfo`` delay in seconds.
    retry_delay: float | None = None
    #: Seconds to wait before answering at all (a slow model).
    delay: float = 0.0
    #: Seconds between two streamed events.
    chunk_delay: float = 0.0
    #: Stream this many events, then go silent without closing (a stalled stream).
    stall_after: int | None = None
    #: Stream this many events, then close before the finishing event (a truncated stream).
    truncate_after: int | None = None
    #: Stream this many events, then send an ``{"error": ...}`` event and close.
    error_after: int | None = None
    #: Answer 200 with a body that is not JSON.
    malformed: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Reply:
        """Build from JSON (the control endpoint); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"unknown reply fields {sorted(unknown)} (known: {sorted(names)})")
        return cls(**raw)


@dataclass(frozen=True)
class Prompt:
    """A generate (chat) request as a script matcher sees it, the same for both fakes.

    The fakes see no agent ids: an agent shows in what the kernel sends for it, its
    system instruction (SPAWN's ``llm.system``, THINK's ``system``) and its context's
    replayed turns.
    """

    model: str
    #: The system instruction's text ('' without one).
    system: str
    #: Every turn in order as ``(role, text)``; roles ``user``, ``model`` (OpenAI's
    #: ``assistant``) and ``tool`` (function results). A function call or result is its
    #: name followed by the compact JSON of its arguments or result.
    turns: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    #: The request body as sent (Gemini's with a ``cachedContent`` prepended).
    body: Any

    @property
    def user(self) -> str:
        """The last user turn's text ('' if there is none)."""
        return next((text for role, text in reversed(self.turns) if role == "user"), "")

    @property
    def history(self) -> str:
        """Every turn's text, one per line: what the kernel replays of a context."""
        return "\n".join(text for _, text in self.turns)


@dataclass(frozen=True)
class Match:
    """Which requests a scripted queue answers: every condition given must hold.

    ``model`` is the model id; ``user``, ``system`` and ``history`` are substrings of
    the last user text, the system instruction and the whole conversation; ``when``
    is any test on the ``Prompt``.
    """

    model: str | None = None
    user: str | None = None
    system: str | None = None
    history: str | None = None
    when: Callable[[Prompt], bool] | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.model, self.user, self.system, self.history,
                                                   self.when))

    def __call__(self, prompt: Prompt) -> bool:
        return ((self.model is None or prompt.model == self.model)
                and (self.user is None or self.user in prompt.user)
                and (self.system is None or self.system in prompt.system)
                and (self.history is None or self.history in prompt.history)
                and (self.when is None or bool(self.when(prompt))))

    @classmethod
    def from_dict(cls, raw: Any) -> Match:
        """Build from JSON (the control endpoint): string conditions only, unknown keys an error."""
        known = ("model", "user", "system", "history")
        if not isinstance(raw, dict) or set(raw) - set(known) or not all(
                isinstance(raw[key], str) for key in raw):
            raise ValueError(f"match must be an object of strings with keys among {list(known)}, got {raw!r}")
        return cls(**raw)


def text_reply(text: str, **kwargs: Any) -> Reply:
    """The model answers ``text``."""
    return Reply(text=text, **kwargs)


def call_reply(*calls: tuple[str, dict[str, Any]], text: str = "", **kwargs: Any) -> Reply:
    """The model asks for function calls ``(name, args)``, optionally after some text."""
    return Reply(text=text, function_calls=[{"name": n, "args": a} for n, a in calls], **kwargs)


def error_reply(status: int, message: str = "", retry_delay: float | None = None,
                **kwargs: Any) -> Reply:
    """The server answers ``status`` with a provider-shaped error body."""
    return Reply(status=status, message=message, retry_delay=retry_delay, **kwargs)


def blocked_reply(category: str = "HARM_CATEGORY_DANGEROUS_CONTENT", *, prompt: bool = False,
                  text: str = "") -> Reply:
    """A safety block: the answer stops with finishReason SAFETY (after ``text``, if any) or, with
    ``prompt``, the prompt is refused (``promptFeedback.blockReason`` SAFETY, no candidates)."""
    ratings = safety_ratings(category)
    if prompt:
        return Reply(block_reason="SAFETY", safety_ratings=ratings)
    return Reply(text=text, finish_reason="SAFETY", safety_ratings=ratings)


#: The Gemini API's harm categories (the others in the enum are rejected for Gemini models).
HARM_CATEGORIES = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
                   "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY")


def safety_ratings(blocked: str) -> list[dict[str, Any]]:
    """Ratings as Gemini reports a block: ``blocked`` rated HIGH and flagged, the rest NEGLIGIBLE."""
    return [{"category": c, "probability": "HIGH", "blocked": True} if c == blocked
            else {"category": c, "probability": "NEGLIGIBLE"} for c in HARM_CATEGORIES[:4]]


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per 4 characters, rounded up."""
    return tokens_for(len(text))


def tokens_for(characters: int) -> int:
    """``count_tokens`` of a text of that many characters."""
    return math.ceil(characters / 4)


def split_text(text: str, pieces: int) -> list[str]:
    """``text`` cut into at most ``pieces`` non-empty pieces that concatenate to it."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size = math.ceil(len(text) / pieces)
    return [text[i:i + size] for i in range(0, len(text), size)]


def sample_args(schema: Any) -> Any:
    """Plausible arguments for a parameters schema, for the fakes' unscripted function calls."""
    if not isinstance(schema, dict):
        return {}
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: sample_args(sub) for name, sub in props.items()}
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": []}.get(kind)
