"""Provider-neutral request and answer of one model call.

Conversation turns are kept in Gemini's ``Content`` shape
(``{"role": "user"|"model", "parts": [...]}``) everywhere in the kernel: it is
what contexts persist and what Gemini needs replayed verbatim (thought
signatures included). The OpenAI-compatible provider converts at its edge.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .safety import SafetySettings

Content = dict[str, Any]

#: Receives each streamed delta: ``{"text": str}`` or ``{"function_call": {...}}``.
ChunkSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling and output controls; None means the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None
    include_thoughts: bool = False
    #: ``application/json`` asks for JSON output; a schema (JSON Schema) constrains it.
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    #: Answers to generate (Gemini ``candidateCount``, OpenAI ``n``); None is one.
    candidates: int | None = None


@dataclass
class ModelRequest:
    """One call: the whole conversation so far plus options and tools. Not changed once made
    (``dataclasses.replace`` makes a changed copy); not frozen, because a frozen dataclass sets
    each field through ``object.__setattr__``, which made building one, as every THINK does,
    cost 17k instructions instead of 6k."""

    contents: list[Content]
    system: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    #: Function declarations: ``{"name", "description", "parameters": <JSON Schema>}``.
    functions: tuple[dict[str, Any], ...] = ()
    #: ``AUTO`` / ``ANY`` / ``NONE``; None leaves the provider default (auto).
    function_mode: str | None = None
    allowed_functions: tuple[str, ...] = ()
    #: Overrides the configured model for this call.
    model: str | None = None
    #: Gemini ``safetySettings``; empty leaves the model's defaults.
    safety: SafetySettings = ()


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to turn into vectors, one call."""

    texts: tuple[str, ...]
    model: str
    #: Gemini's ``taskType`` (``RETRIEVAL_QUERY`` ...); a provider without one ignores it.
    task_type: str | None = None
    #: Length of each vector (Gemini ``outputDimensionality``, OpenAI ``dimensions``).
    dimensions: int | None = None


@dataclass
class Embeddings:
    """One vector per text, in the order of the texts."""

    vectors: list[list[float]]
    model: str
    #: Input tokens as the provider reported them; None when it reported none.
    tokens: int | None


@dataclass(frozen=True)
class ModelInfo:
    """One model the provider serves; a limit it does not publish is None."""

    name: str
    display_name: str
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    #: What it does, in the provider's words (Gemini ``generateContent``, ``embedContent`` ...).
    methods: tuple[str, ...] = ()


@dataclass
class Usage:
    """Token counts of one call; ``output`` includes thinking tokens (they are billed as output)."""

    prompt: int = 0
    output: int = 0
    total: int = 0
    thoughts: int = 0
    #: Of ``prompt``, those served from a context cache (billed cheaper).
    cached: int = 0
    #: USD, from the kernel's price table; None when the model has no price there.
    cost_usd: float | None = None

    @classmethod
    def reported(cls, prompt: Any, output: Any, total: Any, thoughts: Any = 0,
                 cached: Any = 0) -> Usage:
        """Usage from the counts a provider's answer reports, which the kernel does not trust:
        a value that is not a count (negative, fractional, a string, absurdly large) counts 0,
        so no answer can refund a budget; the total is at least prompt + output, so a small
        total cannot hide them; cached and thoughts are at most prompt and output."""
        prompt, output, total = token_count(prompt), token_count(output), token_count(total)
        thoughts, cached = token_count(thoughts), token_count(cached)
        counted = prompt + output
        # Positional, and no min()/max() calls: every answer is counted here, and keywords to a
        # class cost about 400 instructions each (type_call packs them into a dict).
        return cls(prompt, output, total if total > counted else counted,
                   thoughts if thoughts < output else output, cached if cached < prompt else prompt)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "output": self.output, "total": self.total,
                "thoughts": self.thoughts, "cached": self.cached, "cost_usd": self.cost_usd}


#: Gemini's usage counts are int32; a count above this is not one.
MAX_TOKEN_COUNT = 2**31 - 1


def token_count(value: Any) -> int:
    """``value`` as a token count from a provider's answer, 0 when it is not one (missing,
    negative, fractional, not a number, above ``MAX_TOKEN_COUNT``)."""
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value  # what providers send: seven counts per answer take this way
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        return 0
    return value


@dataclass
class Candidate:
    """One of the answers a call asked for with ``candidates``."""

    text: str
    function_calls: list[dict[str, Any]]
    finish_reason: str
    #: Why it was withheld and the ratings, when the provider sent any (see ``Completion.safety``).
    safety: dict[str, Any] | None = None


@dataclass
class Completion:
    """A model's answer to one call: its first candidate, and all of them in ``candidates``."""

    text: str
    function_calls: list[dict[str, Any]]
    #: Lower-case: ``stop``, ``max_tokens``, ``safety``, ``malformed_function_call`` ...
    finish_reason: str
    usage: Usage
    model: str
    #: The model turn exactly as the provider sent it, to replay in the next call.
    turn: Content
    #: ``{"blocked", "reason"?, "source"?, "ratings"?}`` when the answer was withheld
    #: (``finish_reason`` ``safety``) or the provider rated it; None otherwise.
    safety: dict[str, Any] | None = None
    #: Every candidate, the first included, in order.
    candidates: list[Candidate] = field(default_factory=list)
    #: ``[{model, error: {type, message, ...}}]``: earlier models of a fallback chain that failed.
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
