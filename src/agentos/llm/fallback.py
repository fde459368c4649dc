"""Model fallback chains: ``model: ["gemini-2.5-flash", "gemini-2.5-flash-lite"]``.

A call goes to the first model; when that one is rate limited, failing (5xx, a
broken answer) or too slow, it goes on to the next, and so on. A model with a
successor is never waited for: it gets one attempt, a 429 or a server's pause
moves the call on at once (the pause still holds for that model's later calls),
and a model already paused is skipped without a request. Only the last model
gets the configured retries and waits, so a chain is never slower than its last
model alone would be. Chunks already streamed cannot be taken back, so after
the first one there is no other model, just as there is no retry. The models
share the call's one deadline (``generate`` carries it): ``deadline_exceeded``
is not a reason to try another model, so once it has passed the call ends.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from .errors import ErrorKind, LLMError
from .retry import Gate, RetryPolicy
from .types import ChunkSink, Completion, ModelRequest

#: Failures another model may not share: its own quota, its own servers, its own speed.
#: A refused request (auth, a bad field) would fail on every model alike, so it ends the call.
FALLBACK_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.UNAVAILABLE, ErrorKind.TIMEOUT})


class Generate(Protocol):
    """``Provider.generate``: one model's answer, with its retries."""

    def __call__(self, request: ModelRequest, on_chunk: ChunkSink | None, gate: Gate,
                 retry: RetryPolicy | None) -> Awaitable[Completion]: ...


class ModelChain:
    """One call's way through its models; ``failed`` and ``model`` say what happened."""

    def __init__(self, models: Sequence[str], gate_for: Callable[[str], Gate],
                 policy: RetryPolicy) -> None:
        if not models:
            raise ValueError("a model chain needs at least one model")
        self.models = tuple(models)
        self._gate_for = gate_for
        #: One attempt, no waiting: what a model with a successor gets (most calls name one model).
        self._eager = (replace(policy, max_attempts=1, max_wait=0.0) if len(self.models) > 1
                       else policy)
        #: ``[{model, error}]``: the models given up on, in order (the reply's ``fallbacks``).
        self.failed: list[dict[str, Any]] = []
        #: The model tried last: the one that answered, or whose error ended the call.
        self.model = self.models[0]

    async def generate(self, generate: Generate, request: ModelRequest,
                       on_chunk: ChunkSink | None = None) -> Completion:
        """The first answer down the chain; raises the error that ended it."""
        streamed = False
        sink: ChunkSink | None = None
        if on_chunk is not None:
            async def sink(delta: dict[str, Any]) -> None:
                nonlocal streamed
                streamed = True
                await on_chunk(delta)

        for model in self.models[:-1]:
            self.model = model
            gate = self._gate_for(model)
            hold = gate.hold()
            if hold > 0:
                self._give_up(model, LLMError(
                    ErrorKind.RATE_LIMITED, f"{model} is paused by its server for another "
                    f"{hold:.1f}s; skipped", retry_after=hold))
                continue
            try:
                completion = await generate(replace(request, model=model), sink, gate, self._eager)
            except LLMError as error:
                if streamed or error.kind not in FALLBACK_KINDS:
                    raise
                self._give_up(model, error)
                continue
            completion.fallbacks = self.failed
            return completion
        self.model = self.models[-1]
        # Most calls name one model, which the request names already: no copy for them.
        completion = await generate(request if request.model == self.model
                                    else replace(request, model=self.model), sink,
                                    self._gate_for(self.model), None)
        completion.fallbacks = self.failed
        return completion

    def _give_up(self, model: str, error: LLMError) -> None:
        self.failed.append({"model": model, "error": error.to_dict()})
