"""What the THINK service needs from a model provider, and the retry logic they share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .config import LLMConfig
from .deadline import Deadline
from .errors import ErrorKind, LLMError
from .http import HttpClient, HttpSession
from .retry import UNGATED, Gate, RetryPolicy, with_retries
from .types import ChunkSink, Completion, EmbeddingRequest, Embeddings, ModelInfo, ModelRequest

T = TypeVar("T")
#: What reading an answer of the wrong shape raises.
_MALFORMED = (AttributeError, LookupError, TypeError, ValueError, ArithmeticError)

if TYPE_CHECKING:
    from .prefix_cache import PrefixCache


class Provider(ABC):
    """A model API. ``generate`` retries transient failures until something was streamed."""

    name: str

    def __init__(self, config: LLMConfig, session: HttpSession) -> None:
        self.config = config
        self.http = HttpClient(session, config, self.name)

    async def generate(self, request: ModelRequest, on_chunk: ChunkSink | None = None,
                       gate: Gate = UNGATED, retry: RetryPolicy | None = None,
                       deadline: Deadline | None = None) -> Completion:
        """One model answer; with ``on_chunk`` it is streamed delta by delta. Each attempt passes
        ``gate`` (the model's rate limit, a scheduler slot), and waits between attempts outside it.
        ``retry`` replaces the configured policy (a fallback chain gives up on a model sooner).
        ``deadline`` bounds the whole call, queueing, attempts and waits included (a fallback
        chain hands the THINK's one deadline to each model in turn); without one the call gets
        ``llm.deadline`` from now. Past it the call raises ``deadline_exceeded``."""
        self._check_key()
        surfaced = False
        sink_failed = False
        sink: ChunkSink | None = None
        if on_chunk is not None:
            async def deliver(delta: dict) -> None:
                nonlocal surfaced, sink_failed
                surfaced = True
                assert on_chunk is not None
                try:
                    await on_chunk(delta)
                except BaseException:
                    sink_failed = True
                    raise

            sink = deliver

        async def attempt(_: int) -> Completion:
            # ``_readable``'s conversion, inline: every THINK's attempt passes here.
            try:
                return await self._generate_once(request, sink)
            except LLMError as error:
                # Chunks the agent already has cannot be taken back, so no second attempt.
                if surfaced:
                    error.retryable = False
                raise
            except _MALFORMED as exc:
                if sink_failed:
                    raise
                malformed = self._malformed(exc)
                malformed.retryable = not surfaced
                raise malformed from None

        return await with_retries(attempt, retry or self.config.retry, gate=gate,
                                  deadline=deadline or Deadline.after(self.config.deadline))

    async def count_tokens(self, request: ModelRequest, gate: Gate = UNGATED) -> int:
        """The input tokens ``request`` would cost: its contents, system instruction and functions."""
        return await self._retried(lambda: self._count_once(request), gate)

    async def embed(self, request: EmbeddingRequest, gate: Gate = UNGATED) -> Embeddings:
        """One vector per text, in order."""
        return await self._retried(lambda: self._embed_once(request), gate)

    async def list_models(self) -> list[ModelInfo]:
        """Every model the endpoint serves (all pages)."""
        return await self._retried(self._list_models_once, UNGATED)

    async def check_endpoint(self) -> None:
        """One models-list request, not retried: raises the ``LLMError`` a call would meet now
        (``probe.py`` runs it at kernel start, ``agentos doctor`` without a kernel)."""
        await self._readable(self._list_models_once())

    async def _retried(self, once: Callable[[], Awaitable[T]], gate: Gate) -> T:
        """COUNT's, EMBED's and MODELS' calls: retried like THINK's, within ``llm.deadline``."""
        self._check_key()
        return await with_retries(lambda _: self._readable(once()), self.config.retry, gate=gate,
                                  deadline=Deadline.after(self.config.deadline))

    async def _readable(self, answer: Awaitable[T],
                        ours: Callable[[], bool] = lambda: False) -> T:
        """``answer``'s result; an answer shaped unlike the API's (a list where an object
        belongs, a string for a number...) is ``unavailable``, not a failure of the kernel: the
        provider's bytes are untrusted input. ``ours()`` says a failure was the kernel's own
        (delivering a chunk), which is raised as it is."""
        try:
            return await answer
        except _MALFORMED as exc:
            if ours():
                raise
            raise self._malformed(exc) from None

    def _malformed(self, exc: Exception) -> LLMError:
        return LLMError(ErrorKind.UNAVAILABLE, f"{self.name}: the answer is malformed "
                        f"({type(exc).__name__}: {exc})", retryable=True)

    def _check_key(self) -> None:
        if not self.config.api_key and self.config.needs_key:  # the property only when keyless
            raise LLMError(ErrorKind.NOT_CONFIGURED,
                           f"no API key: set {self.config.key_variable} (or GOOGLE_API_KEY) in the "
                           "kernel's environment and restart the kernel")

    def check_functions(self, functions: Sequence[dict[str, Any]]) -> None:
        """Raise ``invalid_argument``, naming the path, for a function declaration this API
        cannot take; the call is refused before it is queued or counted."""

    @abstractmethod
    async def _generate_once(self, request: ModelRequest, on_chunk: ChunkSink | None) -> Completion:
        """One HTTP attempt."""

    @abstractmethod
    async def _count_once(self, request: ModelRequest) -> int:
        """One HTTP attempt at counting; a provider without a count endpoint raises ``unsupported``."""

    @abstractmethod
    async def _embed_once(self, request: EmbeddingRequest) -> Embeddings:
        """One HTTP attempt at embedding every text of ``request``."""

    @abstractmethod
    async def _list_models_once(self) -> list[ModelInfo]:
        """One attempt at listing the models, every page."""


def make_provider(config: LLMConfig, session: HttpSession,
                  prefix_cache: PrefixCache | None = None) -> Provider:
    """The provider ``config.provider`` names; only Gemini uses a prefix cache."""
    if config.provider == "openai":
        from .openai_compat import OpenAICompatProvider
        return OpenAICompatProvider(config, session)
    from .gemini import GeminiProvider
    return GeminiProvider(config, session, prefix_cache)
