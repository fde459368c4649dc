"""The ``llm`` section of the kernel configuration, plus the environment variables it honours.

Precedence for each setting: environment variable > ``llm`` section > default.
The API key only ever comes from the environment of the kernel, never from a
manifest, and never leaves the kernel.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import ujson

from ..units import parse_bytes, parse_duration
from .pricing import Prices
from .request import model_chain
from .retry import RetryPolicy
from .safety import SafetySettings, parse_safety

log = logging.getLogger("agentos.llm")
T = TypeVar("T", int, float)

#: Stable alias on v1beta that follows Google's current Flash model, so a model
#: retirement (as happened to the seed's gemini-2.0-flash) does not break agents.
DEFAULT_GEMINI_MODEL = "gemini-flash-latest"
DEFAULT_GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_GEMINI_API_VERSION = "v1beta"
DEFAULT_GEMINI_EMBEDDING_MODEL = "gemini-embedding-001"
DEFAULT_OPENAI_BASE_URL = "http://127.0.0.1:11434/v1"
PROVIDERS = ("gemini", "openai")


@dataclass(frozen=True)
class AgentPolicy:
    """What one agent may do: scheduling weight, budgets, model overrides."""

    #: Scheduling weight: agents competing for slots hold them in proportion to it.
    priority: int = 1
    #: Total tokens (prompt + output) the agent may spend; None is unlimited.
    max_tokens: int | None = None
    #: THINK calls per rolling minute; None is unlimited.
    calls_per_minute: int | None = None
    #: US dollars the agent may spend (priced by ``llm.prices``); None is unlimited.
    max_usd: float | None = None
    #: Models this agent may ask for besides the default; ``("*",)`` allows any.
    models: tuple[str, ...] = ()
    #: The agent's default model and its fallbacks (``model``); empty is the kernel's chain.
    default_models: tuple[str, ...] = ()

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models or model in self.default_models

    def within(self, parent: AgentPolicy) -> AgentPolicy:
        """This policy with no budget looser than ``parent``'s (a spawned agent's ceiling)."""
        return replace(self, max_tokens=_tightest(self.max_tokens, parent.max_tokens),
                       calls_per_minute=_tightest(self.calls_per_minute, parent.calls_per_minute),
                       max_usd=_tightest(self.max_usd, parent.max_usd))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], base: AgentPolicy | None = None,
                     where: str = "llm.defaults") -> AgentPolicy:
        base = base or cls()
        unknown = set(raw) - {"priority", "tokens", "max_tokens", "calls_per_minute", "usd",
                              "models", "model"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} "
                             "(known: priority, tokens, calls_per_minute, usd, models, model)")
        usd = raw.get("usd", base.max_usd)
        tokens = raw.get("tokens", raw.get("max_tokens", base.max_tokens))
        models = raw.get("models", base.models)
        if isinstance(models, str):
            models = (models,)
        return cls(
            priority=_positive_int(raw.get("priority", base.priority), f"{where}.priority"),
            max_tokens=None if tokens is None else _positive_int(tokens, f"{where}.tokens"),
            calls_per_minute=None if raw.get("calls_per_minute", base.calls_per_minute) is None
            else _positive_int(raw.get("calls_per_minute", base.calls_per_minute),
                               f"{where}.calls_per_minute"),
            max_usd=None if usd is None else positive_usd(usd, f"{where}.usd"),
            models=tuple(str(m) for m in models),
            default_models=(model_chain(raw["model"], f"{where}.model") if "model" in raw
                            else base.default_models),
        )


@dataclass(frozen=True)
class ContextPolicy:
    """Size limits of a conversation context; the oldest turns are dropped beyond them."""

    max_turns: int = 200
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class CachePolicy:
    """Context caching of long shared prefixes (Gemini ``cachedContents``)."""

    enabled: bool = True
    #: Prefixes estimated below this many tokens are sent as they are: Gemini refuses to
    #: cache less than 1,024 tokens (Flash models; 4,096 for Pro), and a short prefix
    #: would not repay the extra round trip.
    min_tokens: int = 1024
    #: Lifetime of a cache on the server, refreshed while calls use it.
    ttl: float = 3600.0

    @classmethod
    def from_mapping(cls, raw: Any) -> CachePolicy:
        if not isinstance(raw, Mapping):
            raise ValueError(f"llm.cache: expected a mapping, got {raw!r}")
        unknown = set(raw) - {"enabled", "min_tokens", "ttl"}
        if unknown:
            raise ValueError(f"llm.cache: unknown keys {sorted(unknown)} (known: enabled, "
                             "min_tokens, ttl)")
        enabled = raw.get("enabled", cls.enabled)
        if not isinstance(enabled, bool):
            raise ValueError(f"llm.cache.enabled: expected true or false, got {enabled!r}")
        ttl = parse_duration(raw.get("ttl", cls.ttl), "llm.cache.ttl")
        if ttl < 60:
            raise ValueError(f"llm.cache.ttl: at least 60s, got {raw.get('ttl')!r}")
        return cls(enabled=enabled, ttl=ttl,
                   min_tokens=_positive_int(raw.get("min_tokens", cls.min_tokens),
                                            "llm.cache.min_tokens"))


@dataclass(frozen=True)
class LLMConfig:
    """Everything the THINK gateway needs, resolved once at kernel start."""

    provider: str = "gemini"
    model: str = DEFAULT_GEMINI_MODEL
    #: EMBED's model when the call names none; None (openai without one) makes it a required field.
    embedding_model: str | None = DEFAULT_GEMINI_EMBEDDING_MODEL
    #: Models tried in order after ``model`` when it is rate limited, failing or too slow.
    fallback_models: tuple[str, ...] = ()
    #: Gemini ``safetySettings`` sent with every call; a THINK's own override them per category.
    safety: SafetySettings = ()
    base_url: str = DEFAULT_GEMINI_BASE_URL
    api_version: str = DEFAULT_GEMINI_API_VERSION
    api_key: str | None = field(default=None, repr=False)
    #: Which variable the key came from (for the start-up log line), never the key itself.
    api_key_source: str | None = None
    #: Whole non-streamed request, in seconds.
    timeout: float = 120.0
    connect_timeout: float = 10.0
    #: Longest silence between two streamed chunks before the stream counts as stalled.
    stream_idle_timeout: float = 60.0
    #: A THINK's whole time (queueing, attempts, waits) unless its ``timeout`` asks for another.
    deadline: float = 300.0
    #: The longest ``timeout`` a THINK may ask for; a longer one is cut to it.
    max_deadline: float = 900.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Calls in flight to the provider, across all agents.
    max_inflight: int = 32
    context: ContextPolicy = field(default_factory=ContextPolicy)
    cache: CachePolicy = field(default_factory=CachePolicy)
    defaults: AgentPolicy = field(default_factory=AgentPolicy)
    #: Per-agent policies, keyed by agent name or id.
    agents: Mapping[str, AgentPolicy] = field(default_factory=dict)
    #: USD per million tokens, by model; a model missing here is unpriced.
    prices: Prices = field(default_factory=lambda: Prices({}))

    @property
    def key_variable(self) -> str:
        """The variable to set when no key is configured."""
        return "GEMINI_API_KEY" if self.provider == "gemini" else "OPENAI_API_KEY"

    @property
    def needs_key(self) -> bool:
        """Local OpenAI-compatible servers usually run without a key."""
        return self.provider == "gemini"

    def deadline_for(self, timeout: float | None) -> float:
        """Seconds a THINK gets: its own ``timeout`` up to ``max_deadline``, else ``deadline``."""
        return self.deadline if timeout is None else min(timeout, self.max_deadline)

    def policy_for(self, *names: str | None) -> AgentPolicy:
        """The first per-agent policy matching one of ``names`` (id, ``project/name``, name), else
        the defaults."""
        for name in names:
            if name is not None and name in self.agents:
                return self.agents[name]
        return self.defaults

    @classmethod
    def from_section(cls, section: Mapping[str, Any], environ: Mapping[str, str]) -> LLMConfig:
        """Validate the ``llm`` section; a bad value raises ``ValueError`` naming the key."""
        known = {"provider", "model", "embedding_model", "safety", "base_url", "api_version", "timeout",
                 "connect_timeout", "deadline", "max_deadline",
                 "stream_idle_timeout", "retry", "max_inflight", "context", "cache", "defaults",
                 "agents", "prices"}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"llm: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        provider = _pick(environ.get("AGENTOS_LLM_PROVIDER"), section.get("provider"), "gemini")
        if provider not in PROVIDERS:
            raise ValueError(f"llm.provider: {provider!r} is not one of {PROVIDERS}")
        if provider == "gemini":
            chain = _chain(environ.get("AGENTOS_GEMINI_MODEL"), section.get("model"),
                           DEFAULT_GEMINI_MODEL)
            base_url = _pick(environ.get("AGENTOS_GEMINI_BASE_URL"), section.get("base_url"),
                             DEFAULT_GEMINI_BASE_URL)
            api_version = _pick(environ.get("AGENTOS_GEMINI_API_VERSION"),
                                section.get("api_version"), DEFAULT_GEMINI_API_VERSION)
            key, source = gemini_key(environ)
        else:
            chain = _chain(environ.get("AGENTOS_OPENAI_MODEL"), section.get("model"), "")
            if not chain:
                raise ValueError("llm.model: the openai provider needs a model name "
                                 "(or AGENTOS_OPENAI_MODEL)")
            if section.get("safety") is not None:
                raise ValueError("llm.safety: the openai provider has no safety settings "
                                 "(Chat Completions takes none); remove it")
            base_url = _pick(environ.get("AGENTOS_OPENAI_BASE_URL"), section.get("base_url"),
                             DEFAULT_OPENAI_BASE_URL)
            api_version = ""
            key = (environ.get("OPENAI_API_KEY") or "").strip() or None
            source = "OPENAI_API_KEY" if key else None
        retry = section.get("retry") or {}
        deadline, max_deadline = _deadlines(section)
        context = section.get("context") or {}
        defaults = AgentPolicy.from_mapping(section.get("defaults") or {})
        agents = {str(name): AgentPolicy.from_mapping(raw or {}, defaults, f"llm.agents.{name}")
                  for name, raw in (section.get("agents") or {}).items()}
        return cls(
            embedding_model=_embedding_model(section.get("embedding_model"), provider),
            provider=provider, model=chain[0], fallback_models=chain[1:],
            safety=(() if section.get("safety") is None
                    else parse_safety(section["safety"], "llm.safety")),
            base_url=base_url.rstrip("/"),
            api_version=api_version.strip("/"), api_key=key, api_key_source=source,
            timeout=parse_duration(section.get("timeout", 120.0), "llm.timeout"),
            connect_timeout=parse_duration(section.get("connect_timeout", 10.0),
                                           "llm.connect_timeout"),
            stream_idle_timeout=parse_duration(section.get("stream_idle_timeout", 60.0),
                                               "llm.stream_idle_timeout"),
            deadline=deadline, max_deadline=max_deadline,
            retry=RetryPolicy(
                max_attempts=_positive_int(retry.get("attempts", 5), "llm.retry.attempts"),
                base=parse_duration(_pick(environ.get("AGENTOS_LLM_BACKOFF_BASE"),
                                          retry.get("backoff_base"), 1.0), "llm.retry.backoff_base"),
                max_delay=parse_duration(retry.get("max_delay", 60.0), "llm.retry.max_delay"),
                max_wait=parse_duration(retry.get("max_wait", 120.0), "llm.retry.max_wait"),
                connect_attempts=_positive_int(retry.get("connect_attempts",
                                                         RetryPolicy.connect_attempts),
                                               "llm.retry.connect_attempts"),
                connect_backoff=parse_duration(retry.get("connect_backoff",
                                                         RetryPolicy.connect_backoff),
                                               "llm.retry.connect_backoff"),
            ),
            max_inflight=_positive_int(section.get("max_inflight", 32), "llm.max_inflight"),
            context=ContextPolicy(
                max_turns=_positive_int(context.get("max_turns", 200), "llm.context.max_turns"),
                max_bytes=parse_bytes(context.get("max_bytes", 1024 * 1024),
                                      "llm.context.max_bytes"),
            ),
            cache=CachePolicy.from_mapping(section.get("cache") or {}),
            defaults=defaults,
            agents=agents,
            prices=Prices.from_mapping(section.get("prices")),
        )


def gemini_key(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The key and its variable, with the official SDKs' precedence (GOOGLE_API_KEY wins)."""
    google = (environ.get("GOOGLE_API_KEY") or "").strip()
    gemini = (environ.get("GEMINI_API_KEY") or "").strip()
    if google and gemini:
        log.info("Both GOOGLE_API_KEY and GEMINI_API_KEY are set. Using GOOGLE_API_KEY.")
    if google:
        return google, "GOOGLE_API_KEY"
    if gemini:
        return gemini, "GEMINI_API_KEY"
    return None, None


def _chain(env: str | None, configured: Any, default: str) -> tuple[str, ...]:
    """The model chain: the environment's one model, else the section's chain, else the default."""
    if env:
        return (env,)
    if configured is not None and configured != "":
        return model_chain(configured, "llm.model")
    return (default,) if default else ()


def _embedding_model(value: Any, provider: str) -> str | None:
    """``llm.embedding_model``: Gemini has a default, an OpenAI-compatible server none."""
    if value is None:
        return DEFAULT_GEMINI_EMBEDDING_MODEL if provider == "gemini" else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"llm.embedding_model: expected a model name, got {value!r}")
    return value.strip()


def _deadlines(section: Mapping[str, Any]) -> tuple[float, float]:
    """``llm.deadline`` and ``llm.max_deadline``, both positive, the default within the cap."""
    deadline = parse_duration(section.get("deadline", LLMConfig.deadline), "llm.deadline")
    if deadline <= 0:
        raise ValueError(f"llm.deadline: must be more than 0, got {section.get('deadline')!r}")
    # An unset cap never refuses the configured default.
    cap = section.get("max_deadline", max(LLMConfig.max_deadline, deadline))
    max_deadline = parse_duration(cap, "llm.max_deadline")
    if max_deadline < deadline:
        raise ValueError(f"llm.max_deadline: {cap!r} is shorter than llm.deadline "
                         f"({deadline:g}s)")
    return deadline, max_deadline


def environment_section(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``llm`` section ``AGENTOS_LLM_CONFIG`` holds as JSON (what a kernel without a
    manifest uses), or an empty one."""
    raw = environ.get("AGENTOS_LLM_CONFIG")
    if not raw:
        return {}
    try:
        section = ujson.loads(raw)
    except ValueError as exc:
        raise ValueError(f"AGENTOS_LLM_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(section, dict):
        raise ValueError("AGENTOS_LLM_CONFIG must be a JSON object (the llm section)")
    return section


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def positive_usd(value: Any, what: str) -> float:
    """A budget in US dollars: a number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{what}: expected a positive number of US dollars, got {value!r}")
    return float(value)


def _tightest(own: T | None, ceiling: T | None) -> T | None:
    """The lower of two limits where None is no limit."""
    if own is None:
        return ceiling
    return own if ceiling is None else min(own, ceiling)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}: expected a positive integer, got {value!r}")
    return value
