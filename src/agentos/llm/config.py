"""The ``llm`` section of the kernel configuration, plus the environment variables it honours.

Precedence for each setting: environment variable > ``llm`` section > default.
The API key only ever comes from the environment of the kernel, never from a
manifest, and never leaves the kernel.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..units import parse_bytes, parse_duration
from .retry import RetryPolicy

log = logging.getLogger("agentos.llm")

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
    #: Models this agent may ask for besides the default; ``("*",)`` allows any.
    models: tuple[str, ...] = ()

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], base: AgentPolicy | None = None,
                     where: str = "llm.defaults") -> AgentPolicy:
        base = base or cls()
        unknown = set(raw) - {"priority", "tokens", "max_tokens", "calls_per_minute", "models"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} "
                             "(known: priority, tokens, calls_per_minute, models)")
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
            models=tuple(str(m) for m in models),
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
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Calls in flight to the provider, across all agents.
    max_inflight: int = 32
    context: ContextPolicy = field(default_factory=ContextPolicy)
    cache: CachePolicy = field(default_factory=CachePolicy)
    defaults: AgentPolicy = field(default_factory=AgentPolicy)
    #: Per-agent policies, keyed by agent name or id.
    agents: Mapping[str, AgentPolicy] = field(default_factory=dict)

    @property
    def key_variable(self) -> str:
        """The variable to set when no key is configured."""
        return "GEMINI_API_KEY" if self.provider == "gemini" else "OPENAI_API_KEY"

    @property
    def needs_key(self) -> bool:
        """Local OpenAI-compatible servers usually run without a key."""
        return self.provider == "gemini"

    def policy_for(self, *names: str | None) -> AgentPolicy:
        """The first per-agent policy matching one of ``names`` (id, name), else the defaults."""
        for name in names:
            if name is not None and name in self.agents:
                return self.agents[name]
        return self.defaults

    @classmethod
    def from_section(cls, section: Mapping[str, Any], environ: Mapping[str, str]) -> LLMConfig:
        """Validate the ``llm`` section; a bad value raises ``ValueError`` naming the key."""
        known = {"provider", "model", "embedding_model", "base_url", "api_version", "timeout", "connect_timeout",
                 "stream_idle_timeout", "retry", "max_inflight", "context", "cache", "defaults",
                 "agents"}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"llm: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        provider = _pick(environ.get("AGENTOS_LLM_PROVIDER"), section.get("provider"), "gemini")
        if provider not in PROVIDERS:
            raise ValueError(f"llm.provider: {provider!r} is not one of {PROVIDERS}")
        if provider == "gemini":
            model = _pick(environ.get("AGENTOS_GEMINI_MODEL"), section.get("model"),
                          DEFAULT_GEMINI_MODEL)
            base_url = _pick(environ.get("AGENTOS_GEMINI_BASE_URL"), section.get("base_url"),
                             DEFAULT_GEMINI_BASE_URL)
            api_version = _pick(environ.get("AGENTOS_GEMINI_API_VERSION"),
                                section.get("api_version"), DEFAULT_GEMINI_API_VERSION)
            key, source = gemini_key(environ)
        else:
            model = _pick(environ.get("AGENTOS_OPENAI_MODEL"), section.get("model"), "")
            if not model:
                raise ValueError("llm.model: the openai provider needs a model name "
                                 "(or AGENTOS_OPENAI_MODEL)")
            base_url = _pick(environ.get("AGENTOS_OPENAI_BASE_URL"), section.get("base_url"),
                             DEFAULT_OPENAI_BASE_URL)
            api_version = ""
            key = (environ.get("OPENAI_API_KEY") or "").strip() or None
            source = "OPENAI_API_KEY" if key else None
        retry = section.get("retry") or {}
        context = section.get("context") or {}
        defaults = AgentPolicy.from_mapping(section.get("defaults") or {})
        agents = {str(name): AgentPolicy.from_mapping(raw or {}, defaults, f"llm.agents.{name}")
                  for name, raw in (section.get("agents") or {}).items()}
        return cls(
            embedding_model=_embedding_model(section.get("embedding_model"), provider),
            provider=provider, model=model, base_url=base_url.rstrip("/"),
            api_version=api_version.strip("/"), api_key=key, api_key_source=source,
            timeout=parse_duration(section.get("timeout", 120.0), "llm.timeout"),
            connect_timeout=parse_duration(section.get("connect_timeout", 10.0),
                                           "llm.connect_timeout"),
            stream_idle_timeout=parse_duration(section.get("stream_idle_timeout", 60.0),
                                               "llm.stream_idle_timeout"),
            retry=RetryPolicy(
                max_attempts=_positive_int(retry.get("attempts", 5), "llm.retry.attempts"),
                base=parse_duration(_pick(environ.get("AGENTOS_LLM_BACKOFF_BASE"),
                                          retry.get("backoff_base"), 1.0), "llm.retry.backoff_base"),
                max_delay=parse_duration(retry.get("max_delay", 60.0), "llm.retry.max_delay"),
                max_wait=parse_duration(retry.get("max_wait", 120.0), "llm.retry.max_wait"),
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


def _embedding_model(value: Any, provider: str) -> str | None:
    """``llm.embedding_model``: Gemini has a default, an OpenAI-compatible server none."""
    if value is None:
        return DEFAULT_GEMINI_EMBEDDING_MODEL if provider == "gemini" else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"llm.embedding_model: expected a model name, got {value!r}")
    return value.strip()


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}: expected a positive integer, got {value!r}")
    return value
