"""Context caching of long shared prefixes: one Gemini ``cachedContents`` per distinct prefix.

A call's prefix is what a Gemini cache holds in front of the conversation: the system
instruction, the tools and the tool config. Calls to the same endpoint and model whose
prefixes are byte-identical share one cache, whichever agent makes them, so a team of
agents with one long system prompt sends it once and is billed the cached rate after.

``PrefixCache`` makes a cache on a prefix's first use (one creation however many calls
arrive together), refreshes its TTL while calls use it, forgets it when the server says it
is gone (and makes it again, once per call), sends the call uncached when the server will
not make one, and deletes what it made when the kernel stops. Nothing of it reaches an
agent but the cached token count of its own answers.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import ujson

from .config import CachePolicy, LLMConfig
from .errors import ErrorKind, LLMError
from .gemini import api_root, request_headers
from .http import HttpClient

log = logging.getLogger("agentos.llm")

T = TypeVar("T")

#: The request fields a cache holds; a request using a cache must not carry them itself.
PREFIX_FIELDS = ("systemInstruction", "tools", "toolConfig")
#: The estimate needs no tokenizer round trip; English averages about 4 characters a token.
CHARS_PER_TOKEN = 4
#: After the server refused to make a cache (too small for the model, a quota, an outage),
#: calls with that prefix go uncached for this long instead of asking again each time.
FAILURE_HOLD = 300.0
#: A cache still in use is refreshed once less than this part of its TTL is left.
REFRESH_WHEN_LEFT = 0.25
#: Longest a kernel stop waits for the caches it made to be deleted.
CLOSE_TIMEOUT = 5.0

_NAME = re.compile(r"cachedContents/[A-Za-z0-9_-]+")


class CacheStore(Protocol):
    """Where caches live: the provider's cache resource."""

    #: The server's address: the same prefix on another server is another cache.
    endpoint: str

    async def create(self, model: str, prefix: Mapping[str, Any], ttl: float, label: str) -> str:
        """Make a cache of ``prefix`` for ``model``; its name."""

    async def refresh(self, name: str, ttl: float) -> None:
        """Let the cache live ``ttl`` seconds from now."""

    async def delete(self, name: str) -> None:
        """Delete the cache."""


class GeminiCacheStore:
    """Gemini's ``cachedContents`` resource (create, patch the TTL, delete)."""

    def __init__(self, http: HttpClient, config: LLMConfig) -> None:
        self._http = http
        self.endpoint = api_root(config)
        self._headers = request_headers(config)

    async def create(self, model: str, prefix: Mapping[str, Any], ttl: float, label: str) -> str:
        body = {"model": f"models/{model}", **prefix, "ttl": _duration(ttl), "displayName": label}
        answer = await self._http.post_json(f"{self.endpoint}/cachedContents", body, self._headers)
        name = answer.get("name")
        # The name goes into later URLs: only the documented shape is used.
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise LLMError(ErrorKind.UNAVAILABLE,
                           f"gemini: cachedContents.create answered no usable name ({name!r})")
        return name

    async def refresh(self, name: str, ttl: float) -> None:
        await self._http.send_json("PATCH", f"{self.endpoint}/{name}",
                                   {"ttl": _duration(ttl)}, self._headers)

    async def delete(self, name: str) -> None:
        await self._http.send_json("DELETE", f"{self.endpoint}/{name}", None, self._headers)


@dataclass
class _Entry:
    name: str
    #: Our clock's reading when the server lets the cache go (measured from before we asked,
    #: so never later than the server's).
    expires: float
    #: A refresh was started and has not succeeded; a failed one is not tried again (the
    #: cache lapses and the next call makes a new one).
    refreshing: bool = False


class PrefixCache:
    """Caches of the prefixes calls share, by endpoint, model and prefix content."""

    def __init__(self, store: CacheStore, policy: CachePolicy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        #: Creations in progress, by key: later calls with the same prefix wait for the first.
        self._creating: dict[str, asyncio.Task[_Entry | None]] = {}
        #: Keys whose creation failed, until when they are not tried again.
        self._failed: dict[str, float] = {}
        self._refreshes: set[asyncio.Task[None]] = set()
        self._closed = False

    def generate(self, model: str, body: dict[str, Any],
                 send: Callable[[dict[str, Any]], Awaitable[T]]) -> Awaitable[T]:
        """``send(body)``, its prefix replaced by ``cachedContent`` when the prefix is long enough.

        A cache the server no longer knows is made again once; when that fails too, or no
        cache can be made, the call goes out as it came.
        """
        if self._closed or body.keys().isdisjoint(PREFIX_FIELDS):
            # Not a coroutine of its own: most calls have no prefix, and this is every THINK's way.
            return send(body)
        prefix = {field: body[field] for field in PREFIX_FIELDS if field in body}
        return self._generate_cached(model, body, prefix, send)

    async def _generate_cached(self, model: str, body: dict[str, Any], prefix: dict[str, Any],
                               send: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        canonical = ujson.dumps(prefix, ensure_ascii=False, sort_keys=True,
                                escape_forward_slashes=False)
        if len(canonical) < self._policy.min_tokens * CHARS_PER_TOKEN:
            return await send(body)
        model = model.removeprefix("models/")
        key = hashlib.sha256(f"{self._store.endpoint}\n{model}\n{canonical}".encode()).hexdigest()
        rest = {k: v for k, v in body.items() if k not in PREFIX_FIELDS}
        for last in (False, True):
            name = await self._name(key, model, prefix)
            if name is None:
                break
            try:
                return await send({**rest, "cachedContent": name})
            except LLMError as error:
                if not _gone(error):
                    raise
                log.info("LLM: cache %s is gone (%s); %s", name, error.message,
                         "sending uncached" if last else "making it again")
                self._forget(key, name, failed=last)
        return await send(body)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Delete the caches made here, best effort, within ``timeout`` seconds."""
        self._closed = True
        for task in self._refreshes:
            task.cancel()
        try:
            async with asyncio.timeout(timeout):
                # A creation under way makes a cache that must go too.
                await asyncio.gather(*self._creating.values(), return_exceptions=True)
                now = self._clock()
                names = [e.name for e in self._entries.values() if e.expires > now]
                results = await asyncio.gather(*(self._store.delete(n) for n in names),
                                               return_exceptions=True)
        except TimeoutError:
            log.warning("LLM: deleting the prompt caches took over %.0fs; the rest expire on "
                        "their own (llm.cache.ttl)", timeout)
            return
        finally:
            pending: list[asyncio.Task[Any]] = [*self._creating.values(), *self._refreshes]
            for task in pending:
                task.cancel()
            self._entries.clear()
        failed = [n for n, r in zip(names, results, strict=True)
                  if isinstance(r, BaseException) and not (isinstance(r, LLMError) and _gone(r))]
        if failed:
            log.warning("LLM: could not delete %d prompt cache(s); they expire on their own "
                        "(llm.cache.ttl)", len(failed))

    # --- registry ------------------------------------------------------------------------

    async def _name(self, key: str, model: str, prefix: Mapping[str, Any]) -> str | None:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.expires:
                if (entry.expires - now < self._policy.ttl * REFRESH_WHEN_LEFT
                        and not entry.refreshing):
                    self._refresh(key, entry)
                return entry.name
            del self._entries[key]  # lapsed on the server
        if self._failed.get(key, now) > now:
            return None
        task = self._creating.get(key)
        if task is None:
            # The registry owns the creation, so a waiter cancelled (its agent killed) does
            # not cancel it for the calls waiting beside it.
            task = asyncio.create_task(self._create(key, model, prefix))
            self._creating[key] = task
            task.add_done_callback(lambda _: self._creating.pop(key, None))
        made = await asyncio.shield(task)
        return None if made is None else made.name

    async def _create(self, key: str, model: str, prefix: Mapping[str, Any]) -> _Entry | None:
        asked = self._clock()
        try:
            name = await self._store.create(model, prefix, self._policy.ttl,
                                            f"agentos prefix {key[:16]}")
        except LLMError as error:
            self._failed[key] = self._clock() + FAILURE_HOLD
            log.warning("LLM: could not cache a prompt prefix for %s (%s); calls with it go "
                        "uncached for %.0fs", model, error.message, FAILURE_HOLD)
            return None
        self._prune(asked)
        entry = self._entries[key] = _Entry(name, asked + self._policy.ttl)
        log.info("LLM: cached a prompt prefix for %s as %s", model, name)
        return entry

    def _refresh(self, key: str, entry: _Entry) -> None:
        entry.refreshing = True

        async def refresh() -> None:
            asked = self._clock()
            try:
                await self._store.refresh(entry.name, self._policy.ttl)
            except LLMError as error:
                if _gone(error):
                    self._forget(key, entry.name, failed=False)  # the next call makes a new one
                else:
                    log.info("LLM: could not refresh cache %s (%s); it lapses", entry.name,
                             error.message)
                return
            entry.expires = asked + self._policy.ttl
            entry.refreshing = False

        task = asyncio.create_task(refresh())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    def _forget(self, key: str, name: str, failed: bool) -> None:
        entry = self._entries.get(key)
        # Another call may have made the next cache already.
        if entry is not None and entry.name == name:
            del self._entries[key]
        if failed:
            self._failed[key] = self._clock() + FAILURE_HOLD

    def _prune(self, now: float) -> None:
        """Drop what has lapsed, so a stream of distinct prefixes leaves no trail."""
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]
        for key in [k for k, until in self._failed.items() if until <= now]:
            del self._failed[key]


def _gone(error: LLMError) -> bool:
    """The server no longer knows the cache (deleted, expired)."""
    return error.status == 404 or (error.status in (400, 403) and "cache" in error.message.lower())


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s"
