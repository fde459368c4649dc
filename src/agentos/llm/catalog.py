"""COUNT (0x05), EMBED (0x06) and MODELS (0x07): the model API's other calls, made for agents.

The kernel holds the only key, so counting tokens, embedding texts and listing
models go through it as THINK does, under THINK's rules:

- A model the call names obeys the caller's policy (``llm.agents.<name>.models``); the
  kernel's default model, its fallbacks and the default embedding model are open to
  every caller.
- COUNT and EMBED take a scheduler slot in the caller's turn, one attempt at a time,
  and wait out their model's rate limit without one (``ratelimits``).
- EMBED is admitted by the caller's budget (tokens, US dollars, calls per minute): it
  reserves the texts' estimated tokens and is charged the input tokens the provider
  reports (the estimate when it reports none). COUNT is free: Google does not bill
  countTokens, and the slot it takes keeps it from crowding out anyone's THINK. MODELS
  is free too; its list is fetched once per ``MODELS_TTL`` and shared by every caller.

A model failure is an answer (``success: false`` and a typed ``error``), as for THINK;
a malformed request is an ``invalid_argument`` ERROR frame, a model the policy does
not allow ``permission_denied``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, PermissionDenied, TooLarge
from ..protocol import Op
from ..protocol.payload import encode_payload
from ..protocol.requests import EmbedRequest
from .budgets import Budgets, estimate_input_tokens
from .callers import Caller, Callers
from .config import LLMConfig
from .contexts import ContextStore
from .errors import LLMError
from .provider import Provider
from .request import parse_think
from .retry import Gate
from .types import EmbeddingRequest, Embeddings, GenerationOptions, ModelInfo, ModelRequest, Usage

if TYPE_CHECKING:
    from ..kernel.syscalls import Call

#: Seconds a fetched model list is served before the provider is asked again.
MODELS_TTL = 60.0


class Catalog:
    """The COUNT, EMBED and MODELS handlers, with the collaborators they share with THINK."""

    def __init__(self, config: LLMConfig, callers: Callers, budgets: Budgets,
                 contexts: ContextStore, gate: Callable[[Caller, str], Gate],
                 provider: Callable[[], Provider | None],
                 check_reply: Callable[[Call, bytes], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.callers = callers
        self.budgets = budgets
        self.contexts = contexts
        #: THINK's way to a model: its rate limit, then a slot in the caller's turn.
        self._gate = gate
        #: The provider exists once the service has started (it needs the HTTP session).
        self._provider = provider
        self._check_reply = check_reply
        self._clock = clock
        self._models: tuple[float, list[ModelInfo]] | None = None
        #: One fetch of the list at a time; callers arriving meanwhile get its result.
        self._models_lock = asyncio.Lock()

    def syscalls(self) -> Mapping[Op, Callable[[Call], Awaitable[Any]]]:
        return {Op.COUNT: self.count, Op.EMBED: self.embed, Op.MODELS: self.models}

    # --- COUNT ---------------------------------------------------------------------------

    async def count(self, call: Call) -> dict[str, Any]:
        """``{success, tokens, model, error}``: what THINK's payload would cost as input."""
        caller = self.callers.of(call.identity)
        args = parse_think(call.payload)
        if args.stream:
            raise InvalidArgument("COUNT answers once: remove 'stream'", field="stream")
        if caller.defaults is not None:
            args = caller.defaults.fill(args)
        # A fallback chain is counted for its first model, the one THINK tries first.
        model = args.model or self.config.model
        self._check_model(caller, model)
        provider = self._require_provider()
        if args.functions:
            provider.check_functions(args.functions)
        history: list[dict[str, Any]] = []
        system = args.system
        if args.context is not None:
            context = self.contexts.get(caller.owner, args.context)
            history, system = context.contents, system or context.system
        request = ModelRequest(contents=[*history, *args.turns], system=system,
                               functions=args.functions, function_mode=args.function_mode,
                               allowed_functions=args.allowed_functions, model=model)
        try:
            tokens = await provider.count_tokens(request, self._gate(caller, model))
        except LLMError as error:
            return {"success": False, "tokens": None, "model": model, "error": error.to_dict()}
        return {"success": True, "tokens": tokens, "model": model, "error": None}

    # --- EMBED ---------------------------------------------------------------------------

    async def embed(self, call: Call) -> bytes:
        """``{success, embeddings, model, tokens, error}``, one vector per text, in order."""
        caller = self.callers.of(call.identity)
        wire = call.request
        assert isinstance(wire, EmbedRequest), "EMBED decodes as EmbedRequest"
        if isinstance(wire.texts, list) == isinstance(wire.text, str):
            raise InvalidArgument("EMBED needs exactly one of 'texts' (a list) and 'text'",
                                  field="texts")
        texts = tuple(wire.texts) if isinstance(wire.texts, list) else (str(wire.text),)
        model = wire.model if isinstance(wire.model, str) else self.config.embedding_model
        if model is None:
            raise InvalidArgument("EMBED: name the embedding 'model' (this kernel's provider has "
                                  "no default: llm.embedding_model)", field="model")
        self._check_model(caller, model)
        request = EmbeddingRequest(
            texts=texts, model=model,
            task_type=wire.task_type if isinstance(wire.task_type, str) else None,
            dimensions=wire.dimensions if isinstance(wire.dimensions, int) else None)
        try:
            return await self._spend(call, caller, request)
        except LLMError as error:
            return encode_payload({"success": False, "embeddings": [], "model": model,
                                   "tokens": None, "error": error.to_dict()})

    async def _spend(self, call: Call, caller: Caller, request: EmbeddingRequest) -> bytes:
        """The embeddings' reply, within the caller's budget: reserved before the call, charged
        once the reply can be delivered (one refused as too large for the client costs nothing)."""
        # Texts as one prompt, and one output token: an embedding produces none.
        prompt = ModelRequest(contents=[{"role": "user", "parts": [{"text": text}]}
                                        for text in request.texts],
                              options=GenerationOptions(max_output_tokens=1))
        reservation = self.budgets.admit(caller.key, caller.owner, caller.policy,
                                         (request.model,), prompt)
        try:
            result = await self._require_provider().embed(request,
                                                          self._gate(caller, request.model))
            payload = encode_payload(_embeddings(result))
            self._check_reply(call, payload)
        except (LLMError, TooLarge):
            self.budgets.failed(caller.key, reservation)
            raise
        except asyncio.CancelledError:
            self.budgets.cut_off(reservation)
            raise
        # A provider that reports no count is charged the kernel's estimate, never nothing.
        tokens = result.tokens if result.tokens is not None else estimate_input_tokens(prompt)
        usage = Usage(prompt=tokens, total=tokens)
        usage.cost_usd = self.budgets.cost(reservation, usage, request.model)
        self.budgets.settle(reservation, usage)
        return payload

    # --- MODELS --------------------------------------------------------------------------

    async def models(self, call: Call) -> dict[str, Any]:
        """``{success, models: [{name, display_name, input_token_limit, output_token_limit,
        methods, allowed}], default, embedding_default, error}``."""
        caller = self.callers.of(call.identity)
        answer: dict[str, Any] = {"default": self.config.model,
                                  "embedding_default": self.config.embedding_model}
        try:
            listed = await self._model_list()
        except LLMError as error:
            return {"success": False, "models": [], **answer, "error": error.to_dict()}
        return {"success": True, "models": [
            {"name": m.name, "display_name": m.display_name,
             "input_token_limit": m.input_token_limit, "output_token_limit": m.output_token_limit,
             "methods": list(m.methods), "allowed": self._allows(caller, m.name)}
            for m in listed], **answer, "error": None}

    async def _model_list(self) -> list[ModelInfo]:
        async with self._models_lock:
            if self._models is not None and self._clock() < self._models[0]:
                return self._models[1]
            listed = await self._require_provider().list_models()
            self._models = (self._clock() + MODELS_TTL, listed)
            return listed

    # --- shared --------------------------------------------------------------------------

    def _allows(self, caller: Caller, model: str) -> bool:
        """The kernel's defaults are everyone's; another model needs the caller's policy."""
        return (model in (self.config.model, *self.config.fallback_models,
                          self.config.embedding_model)
                or caller.admin or caller.policy.allows_model(model))

    def _check_model(self, caller: Caller, model: str) -> None:
        if not self._allows(caller, model):
            raise PermissionDenied(f"model {model!r} is not allowed for this agent "
                                   "(llm.agents.<name>.models in the kernel configuration)",
                                   model=model)

    def _require_provider(self) -> Provider:
        provider = self._provider()
        assert provider is not None, "the llm service has not started"
        return provider


def _embeddings(result: Embeddings) -> dict[str, Any]:
    return {"success": True, "embeddings": result.vectors, "model": result.model,
            "tokens": result.tokens, "error": None}
