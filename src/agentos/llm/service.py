"""The ``llm`` kernel service: THINK (0x01), CONTEXT (0x03) and USAGE (0x04); COUNT, EMBED
and MODELS (0x05-0x07) are ``catalog``'s.

Each THINK's handler task is tracked per agent, so killing the agent cancels
it wherever it is: queued in the scheduler or mid-request.
Model failures are answers (``success: false`` with a typed ``error``), not
ERROR frames; ERROR frames are for malformed requests and permissions.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, PermissionDenied, TooLarge
from ..observability import notes
from ..protocol import Op
from ..protocol.lifecycle import ENDED_TOPICS
from ..protocol.payload import encode_payload
from ..protocol.turns import rekeyed
from .budgets import Budgets, Reservation, has_media, team_totals
from .callers import Caller, Callers, agent_key
from .catalog import Catalog
from .config import LLMConfig, environment_section
from .contexts import ContextStore
from .deadline import Alarms, Deadline
from .errors import ErrorKind, LLMError
from .fallback import ModelChain
from .http import HttpClient, HttpSession, new_session
from .prefix_cache import GeminiCacheStore, PrefixCache
from .probe import EndpointCheck
from .provider import Provider, make_provider
from .ratelimits import ModelGate, RateLimits, model_key
from .request import ThinkArgs, parse_think
from .safety import merge_safety
from .scheduler import FairScheduler
from .types import Completion, Content, ModelRequest, Usage

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..kernel.syscalls import Call
    from ..mcp.service import McpService

log = logging.getLogger("agentos.llm")


class LLMService:
    """The THINK gateway inside the kernel; it alone holds the API key."""

    name = "llm"

    def __init__(self, kernel: Kernel, tools: McpService | None = None) -> None:
        self.kernel = kernel
        #: Runs THINK's tool loop with ``tools: "mcp"`` (None: a kernel without MCP servers). The
        #: mcp service needs the processes service, which needs ``callers``: ``build_services``
        #: sets this once the mcp service exists.
        self.tools = tools
        self.config = LLMConfig.from_section(_section(kernel), os.environ)
        self.scheduler = FairScheduler(self.config.max_inflight)
        self.rate_limits = RateLimits()
        self.budgets = Budgets(self.config.prices)
        self.contexts = ContextStore(kernel.config.state_dir / "llm" / "contexts", self.config.context)
        self.callers = Callers(self.config)
        self._session: HttpSession | None = None
        self._provider: Provider | None = None
        self._prefix_cache: PrefixCache | None = None
        self.endpoint = EndpointCheck(self.config)
        #: The handler tasks of THINKs in progress, by caller key; those cancelled by a kill.
        self._calls: dict[str, set[asyncio.Task[Any]]] = {}
        self._killed: set[asyncio.Task[Any]] = set()
        self._unsubscribe: list[Any] = []
        #: Each caller's gate to each model, by (agent key, priority, model): built once, not
        #: on every THINK (a gate holds no state of its own).
        self._gates: dict[tuple[str, int, str], ModelGate] = {}
        #: The loop THINKs run on, passed where asyncio would look it up: on Python 3.11 each
        #: lookup of the running loop is a getpid() syscall.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Every THINK's deadline alarm, on that loop (``deadline.Alarms``).
        self._alarms: Alarms | None = None

    # --- Service protocol ----------------------------------------------------------------

    def syscalls(self) -> Mapping[Op, Any]:
        catalog = Catalog(self.config, self.callers, self.budgets, self.contexts, self._gate,
                          lambda: self._provider, self.kernel.check_reply)
        return {Op.THINK: self.think, Op.CONTEXT: self.context, Op.USAGE: self.usage,
                **catalog.syscalls()}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._alarms = Alarms(self._loop)
        self._session = new_session(self.config)
        self._prefix_cache = self._make_prefix_cache(self._session)
        self._provider = make_provider(self.config, self._session, self._prefix_cache)
        self._unsubscribe = [self.kernel.events.subscribe(topic, self._on_agent_gone) for topic in ENDED_TOPICS]
        cfg = self.config
        where = f"{cfg.base_url}/{cfg.api_version}" if cfg.api_version else cfg.base_url
        if cfg.needs_key and not cfg.api_key:
            log.warning("LLM: provider %s, model %s at %s: NO API KEY - THINK answers an error "
                        "until GEMINI_API_KEY (or GOOGLE_API_KEY) is set in the kernel's environment",
                        cfg.provider, cfg.model, where)
        else:
            log.info("LLM: provider %s, model %s at %s, key from %s, %d calls in flight at most",
                     cfg.provider, cfg.model, where, cfg.api_key_source or "nowhere (none needed)",
                     cfg.max_inflight)
        # In the background: an unreachable endpoint is logged, never waited for.
        self.endpoint.start(self._provider)

    async def stop(self) -> None:
        # The kernel has cancelled and awaited every handler, THINKs included, by now.
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self.endpoint.stop()
        if self._prefix_cache is not None:
            await self._prefix_cache.close()
            self._prefix_cache = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _make_prefix_cache(self, session: HttpSession) -> PrefixCache | None:
        cfg = self.config
        if not cfg.cache.enabled:
            return None
        if cfg.provider != "gemini":
            log.info("LLM: llm.cache does not apply to the %s provider (OpenAI-compatible servers "
                     "cache prompt prefixes on their own)", cfg.provider)
            return None
        store = GeminiCacheStore(HttpClient(session, cfg, cfg.provider), cfg)
        return PrefixCache(store, cfg.cache)

    def capabilities(self) -> Mapping[str, Any]:
        return {"provider": self.config.provider, "model": self.config.model,
                "configured": bool(self.config.api_key) or not self.config.needs_key,
                "streaming": True, "function_calling": True, "contexts": True,
                "max_inflight": self.config.max_inflight, "endpoint": self.endpoint.status.to_dict()}

    # --- THINK ---------------------------------------------------------------------------

    async def think(self, call: Call) -> bytes:
        """The answer, encoded here: measured against what the client accepts before it is charged."""
        caller = self.callers.of(call.identity)
        args = parse_think(call.payload)
        if args.traceparent is not None:  # most calls carry none: no notes lookup for them
            notes.traceparent(args.traceparent)
        if args.stream:
            # An answer found before any text (no key, no budget) still ends the stream with END.
            call.open_stream()
        if caller.defaults is not None:
            args = caller.defaults.fill(args)
        self._check_models(args, caller)
        if args.safety and self.config.provider != "gemini":
            raise InvalidArgument(f"THINK: safety is not supported by the {self.config.provider} "
                                  "provider (Chat Completions takes no safety settings)")
        if args.context is not None:
            self.contexts.get(caller.owner, args.context)  # NotFound before a budgeted call
        if args.functions and self._provider is not None:
            self._provider.check_functions(args.functions)
        task = asyncio.current_task(self._loop)
        assert task is not None
        calls = self._calls.get(caller.key)
        if calls is None:
            calls = self._calls[caller.key] = set()
        calls.add(task)
        try:
            if args.mcp_tools:
                if self.tools is None:
                    raise InvalidArgument("THINK: tools \"mcp\" needs the mcp service, which this kernel does not run",
                                          field="tools")
                from ..mcp.routing import think_with_tools  # the tool loop: only for tools "mcp"
                return await think_with_tools(self.tools, self, call, args, caller)
            return await self._think(call, args, caller)
        except asyncio.CancelledError:
            # Killed agent: answer (its connection may outlive it). Any other cancellation
            # (the client hung up, the kernel stops) propagates.
            if task in self._killed and task.uncancel() == 0:
                return encode_payload(_answer_error(
                    args, LLMError(ErrorKind.CANCELLED, "the agent was stopped"), self.config.model))
            raise
        finally:
            self._killed.discard(task)
            calls = self._calls.get(caller.key)
            if calls is not None:
                calls.discard(task)
                if not calls:
                    del self._calls[caller.key]

    def _check_models(self, args: ThinkArgs, caller: Caller) -> None:
        """Every model a call names is the kernel's or one its policy allows."""
        if args.model is None or caller.admin:
            return
        kernel = (self.config.model, *self.config.fallback_models)
        for index, model in enumerate((args.model, *args.fallbacks)):
            if model not in kernel and not caller.policy.allows_model(model):
                where = f"model[{index}]" if args.fallbacks else "model"
                raise PermissionDenied(f"model override {model!r} ({where}) is not allowed for "
                                       "this agent (llm.agents.<name>.models in the kernel "
                                       "configuration)", model=model, field=where)

    def _chain(self, args: ThinkArgs, caller: Caller) -> ModelChain:
        """The call's models: its own, else its agent's default chain, else the kernel's."""
        models = ((args.model, *args.fallbacks) if args.model is not None
                  else caller.policy.default_models or (self.config.model,
                                                        *self.config.fallback_models))
        # Each attempt takes a slot in the agent's turn; a call waiting to retry holds none.
        return ModelChain(models, partial(self._gate, caller), self.config.retry)

    def _gate(self, caller: Caller, model: str) -> ModelGate:
        """Each attempt takes a slot in the agent's turn; a call waiting to retry holds none."""
        key = (caller.key, caller.policy.priority, model)
        gate = self._gates.get(key)
        if gate is None:
            if len(self._gates) >= _MAX_GATES:
                self._gates.clear()  # agents come and go; the live ones build theirs again
            gate = self._gates[key] = self.rate_limits.gate(
                model_key(self.config.base_url, model), self.scheduler, caller.key,
                caller.policy.priority)
        return gate

    async def _think(self, call: Call, args: ThinkArgs, caller: Caller) -> bytes:
        # From arrival: waiting for the context's lock counts too.
        deadline = Deadline.after(self.config.deadline_for(args.timeout), self._alarms)
        chain = self._chain(args, caller)
        reservation: Reservation | None = None
        try:
            if args.context is None:
                reservation, request = await self._reserve(
                    self._request(args, chain, args.turns, args.system), caller, chain)
                completion = await self._generate(call, args, request, caller, chain, deadline)
                reply = self._deliver(call, args, completion, reservation)
                self.budgets.model_used(caller.key, chain.model, completion.usage)
                return reply
            async with self.contexts.lock(caller.owner, args.context):
                context = self.contexts.get(caller.owner, args.context)
                # Inside the lock: the reservation counts the history this call will send.
                reservation, request = await self._reserve(
                    self._request(args, chain, [*context.contents, *args.turns],
                                  args.system or context.system), caller, chain)
                completion = await self._generate(call, args, request, caller, chain, deadline)
                # Before the context keeps it: a refused answer leaves no trace.
                reply = self._deliver(call, args, completion, reservation)
                self.budgets.model_used(caller.key, chain.model, completion.usage)
                # A withheld answer leaves the context as it was, so the agent can rephrase.
                if completion.finish_reason != "safety":
                    turns = [*args.turns, completion.turn] if completion.turn["parts"] else args.turns
                    await self.contexts.append(context, *turns)
                return reply
        except LLMError as error:
            self.budgets.failed(caller.key, reservation)
            notes.failed(error, chain.model)
            return encode_payload(_answer_error(args, error, chain.model, chain.failed))
        except TooLarge:
            self.budgets.failed(caller.key, reservation)
            self.budgets.model_used(caller.key, chain.model, None)
            raise
        except asyncio.CancelledError:
            self.budgets.cut_off(reservation)
            raise

    def _request(self, args: ThinkArgs, chain: ModelChain, contents: list[Content],
                 system: str | None) -> ModelRequest:
        """The call's one model request, for its first model (a chain's next ones differ
        only in ``model``)."""
        return ModelRequest(contents=contents, system=system, options=args.options,
                            functions=args.functions, function_mode=args.function_mode,
                            allowed_functions=args.allowed_functions,
                            safety=merge_safety(self.config.safety, args.safety),
                            model=chain.models[0])

    async def _reserve(self, request: ModelRequest, caller: Caller,
                       chain: ModelChain) -> tuple[Reservation, ModelRequest]:
        """Admit the call against its budgets (priced at the dearest model of its chain);
        ``request`` with the output limit they leave it.

        Media (a PDF's pages, a video's seconds, a large image's tiles) is billed by what it
        holds, which no local estimate bounds: under a budget the provider counts such a
        prompt first, so the reservation covers it.
        """
        counted = None
        policy = caller.policy
        if (policy.max_tokens is not None or policy.max_usd is not None) and has_media(request):
            assert self._provider is not None, "THINK before the llm service started"
            try:
                # The prompt as billed: its turns, system and declarations, not how to call them.
                counted = await self._provider.count_tokens(
                    replace(request, function_mode=None, allowed_functions=()),
                    self._gate(caller, chain.models[0]))
            except LLMError as error:
                if error.kind is not ErrorKind.UNSUPPORTED:
                    raise
        reservation = self.budgets.admit(caller.key, caller.owner, policy, chain.models, request,
                                         counted)
        if reservation.max_output_tokens is not None:
            request = replace(request, options=replace(
                request.options, max_output_tokens=reservation.max_output_tokens))
        return reservation, request

    def _deliver(self, call: Call, args: ThinkArgs, completion: Completion,
                 reservation: Reservation) -> bytes:
        """The answer's payload, charged only if it can reach the client.

        An unstreamed answer longer than the client accepts is refused (``too_large``) and
        costs nothing; a streamed one has gone out chunk by chunk already, so it is charged
        even if its END frame is refused.
        """
        usage = completion.usage
        if not usage.total:
            usage = completion.usage = self.budgets.unreported(reservation)
        usage.cost_usd = self.budgets.cost(reservation, usage, completion.model)
        payload = encode_payload(_answer(args, completion))
        if not call.streamed:
            self.kernel.check_reply(call, payload)
        self.budgets.settle(reservation, usage)
        notes.answered(completion)
        return payload

    async def _generate(self, call: Call, args: ThinkArgs, request: ModelRequest,
                        caller: Caller, chain: ModelChain, deadline: Deadline) -> Completion:
        assert self._provider is not None, "THINK before the llm service started"
        try:
            # Every model of the chain shares the call's one deadline.
            return await chain.generate(partial(self._provider.generate, deadline=deadline),
                                        request, call.stream if args.stream else None)
        except LLMError:
            self.budgets.model_used(caller.key, chain.model, None)
            raise
        finally:
            for failure in chain.failed:
                self.budgets.model_used(caller.key, failure["model"], None)

    def _on_agent_gone(self, topic: str, event: dict[str, Any]) -> None:
        agent_id = event.get("id")
        if agent_id is not None:
            self.cancel_agent(str(agent_id))

    def forget_agents(self, agent_ids: Sequence[str]) -> None:
        """Agents the process table forgot (``processes.keep_ended``): what was kept per id goes."""
        self.callers.forget(agent_ids)
        self.budgets.forget(agent_key(agent_id) for agent_id in agent_ids)

    def registry_sizes(self) -> Mapping[str, int]:
        return {"callers": len(self.callers), "usage": len(self.budgets.agents())}

    def cancel_agent(self, agent_id: str) -> int:
        """Cancel every THINK of an agent, queued or in flight; returns how many."""
        calls = list(self._calls.get(agent_key(agent_id), ()))
        for task in calls:
            self._killed.add(task)
            task.cancel()
        if calls:
            log.info("cancelled %d THINK call(s) of agent %s", len(calls), agent_id)
        return len(calls)

    # --- CONTEXT -------------------------------------------------------------------------

    async def context(self, call: Call) -> dict[str, Any]:
        args = call.args()
        op = args.get("op")
        owner = self.callers.of(call.identity).owner
        context_id = args.get("id")
        if op == "list":
            return {"contexts": [c.summary() for c in self.contexts.list(owner)]}
        if op == "create":
            system = args.get("system")
            if system is not None and not isinstance(system, str):
                raise InvalidArgument("CONTEXT create: system must be a string")
            return (await self.contexts.create(owner, context_id, system)).summary()
        if not isinstance(context_id, str):
            raise InvalidArgument(f"CONTEXT {op}: 'id' (the context id) is required")
        if op == "get":
            context = self.contexts.get(owner, context_id)
            return {**context.summary(), "contents": context.contents}
        async with self.contexts.lock(owner, context_id):
            if op == "clear":
                return (await self.contexts.clear(owner, context_id)).summary()
            if op == "fork":
                return (await self.contexts.fork(owner, context_id, args.get("new_id"))).summary()
            if op == "delete":
                await self.contexts.delete(owner, context_id)
                return {"deleted": context_id}
        raise InvalidArgument(f"CONTEXT: op must be create, get, list, clear, fork or delete; "
                              f"got {op!r}")

    # --- USAGE ---------------------------------------------------------------------------

    async def usage(self, call: Call) -> dict[str, Any]:
        caller = self.callers.of(call.identity)
        keys = self.budgets.agents() if caller.admin else [caller.key]
        agents = {key: self._report(key) for key in keys}
        return {"provider": self.config.provider, "model": self.config.model,
                "in_flight": self.scheduler.in_flight, "queued": self.scheduler.queued(),
                "limit": self.scheduler.limit, "you": caller.key, "agents": agents,
                "teams": team_totals(agents),
                "unpriced_models": sorted(self.budgets.unpriced_models)}

    def _report(self, key: str) -> dict[str, Any]:
        return {**self.budgets.report(key, self.callers.policy_of(key)), "queued": self.scheduler.queued(key),
                "in_flight": self.scheduler.running(key), "team": self.callers.team_of(key)}


def _answer(args: ThinkArgs, completion: Completion) -> dict[str, Any]:
    if args.plain:
        return {"content": completion.text, "tokens": completion.usage.total, "error": None}
    answer: dict[str, Any] = {
        "success": True, "content": completion.text, "tokens": completion.usage.to_dict(),
        "finish_reason": completion.finish_reason, "function_calls": completion.function_calls,
        "model": completion.model, "error": None, "turn": _wire_turn(completion),
        "context": args.context}
    if args.stream:
        # The text went out as STREAM chunks already; the SDK joins them (docs/protocol.md).
        del answer["content"]
    # Only when there is something to say: most answers have no fallbacks, ratings or candidates.
    if completion.fallbacks:
        answer["fallbacks"] = completion.fallbacks
    if completion.safety is not None:
        answer["safety"] = completion.safety
    if args.options.candidates is not None:
        answer["candidates"] = _wire_candidates(completion)
    return answer


def _wire_candidates(completion: Completion) -> list[dict[str, Any]]:
    """Every candidate's finish reason; the first one's content, function calls and safety are
    the answer's own and not sent again (the SDK fills them in)."""
    out: list[dict[str, Any]] = []
    for index, candidate in enumerate(completion.candidates):
        entry: dict[str, Any] = {"finish_reason": candidate.finish_reason}
        if index:
            entry.update(content=candidate.text, function_calls=candidate.function_calls)
            if candidate.safety is not None:
                entry["safety"] = candidate.safety
        out.append(entry)
    return out


def _wire_turn(completion: Completion) -> Content:
    """The model turn without what the answer carries already, so nothing is sent twice.

    A part whose text is the next piece of ``content`` is sent as ``content_chars`` (that
    piece's length in characters) instead of ``text``; a part whose ``functionCall`` is the
    next entry of ``function_calls``, exactly, as ``function_call`` (that entry's index).
    Every other key (thought signatures, thoughts) is sent as it is. The SDK puts the turn
    back together (``agentos.client.think.full_turn``).
    """
    content, calls = completion.text, completion.function_calls
    parts: list[dict[str, Any]] = []
    cursor = call_index = 0
    for part in completion.turn["parts"]:
        text = part.get("text")
        if isinstance(text, str) and not part.get("thought") and content.startswith(text, cursor):
            part = rekeyed(part, "text", "content_chars", len(text))
            cursor += len(text)
        elif "functionCall" in part:
            if call_index < len(calls) and part["functionCall"] == calls[call_index]:
                part = rekeyed(part, "functionCall", "function_call", call_index)
            call_index += 1
        parts.append(part)
    return {**completion.turn, "parts": parts}


#: Gates kept at most (agents x models x priorities).
_MAX_GATES = 4096
#: A failed call's ``tokens``: the failure is not charged.
_NOTHING_SPENT = Usage(cost_usd=0.0).to_dict()


def _answer_error(args: ThinkArgs, error: LLMError, model: str,
                  fallbacks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if args.plain:
        return {"content": None, "tokens": 0, "error": f"{error.kind.value}: {error.message}"}
    answer: dict[str, Any] = {
        "success": False, "content": None, "tokens": _NOTHING_SPENT, "finish_reason": None,
        "function_calls": [], "model": model, "error": error.to_dict(), "turn": None,
        "context": args.context}
    if fallbacks:
        answer["fallbacks"] = fallbacks
    return answer


def _section(kernel: Kernel) -> dict[str, Any]:
    """The ``llm`` section; ``AGENTOS_LLM_CONFIG`` (JSON) fills in when there is no manifest."""
    return {**environment_section(os.environ), **kernel.config.section("llm")}
