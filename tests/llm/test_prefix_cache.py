"""Context caching of long shared prefixes (Gemini cachedContents), against the fake over HTTP."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from agentos.llm.config import CachePolicy, LLMConfig
from agentos.llm.http import HttpClient, new_session
from agentos.llm.prefix_cache import GeminiCacheStore, PrefixCache
from agentos.llm.provider import Provider, make_provider
from agentos.llm.types import ModelRequest
from agentos.testing import FakeGemini, text_reply
from agentos.testing._server import RecordedRequest

from .conftest import config_for

T = TypeVar("T")

#: About 2,700 tokens at the fake's 4 characters a token: above every minimum.
LONG = "You review pull requests for a kernel team. Be exact, cite lines, never guess. " * 140
TOOL = {"name": "read_file", "description": "Read a file of the repository",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}


def ask(text: str, system: str | None = LONG, **fields: Any) -> ModelRequest:
    return ModelRequest(contents=[{"role": "user", "parts": [{"text": text}]}], system=system,
                        **fields)


def creates(fake: FakeGemini) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/cachedContents")]


def generations(fake: FakeGemini) -> list[RecordedRequest]:
    return [r for r in fake.requests
            if r.path.endswith((":generateContent", ":streamGenerateContent"))]


class Clock:
    """The registry's clock, moved by the test (TTLs of an hour, tests of a millisecond)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def with_cache(test: Callable[[FakeGemini, Provider, PrefixCache], Awaitable[T]],
                     clock: Callable[[], float] = time.monotonic, **policy: Any) -> T:
    """``test(fake, provider, cache)``: a provider whose prefix cache is on a fresh fake."""
    async with FakeGemini() as fake:
        config = config_for(fake.url, cache=CachePolicy(**policy))
        async with new_session(config) as session:
            cache = PrefixCache(GeminiCacheStore(HttpClient(session, config, "gemini"), config),
                                config.cache, clock=clock)
            try:
                return await test(fake, make_provider(config, session, cache), cache)
            finally:
                await cache.close()


async def forget_on_server(fake: FakeGemini, name: str) -> None:
    """What expiry does: the server no longer knows the cache (deleted as another client would)."""
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{fake.url}/v1beta/{name}",
                                  headers={"x-goog-api-key": fake.api_key}) as resp:
            assert resp.status == 200, await resp.text()


def test_concurrent_calls_with_one_long_prefix_make_one_cache_and_all_use_it() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        fake.script(*(text_reply(f"answer {i}") for i in range(6)))
        chunks: list[dict[str, Any]] = []

        async def sink(delta: dict[str, Any]) -> None:
            chunks.append(delta)

        calls = [provider.generate(ask(f"question {i}", functions=(TOOL,), function_mode="AUTO"))
                 for i in range(5)]
        calls.append(provider.generate(ask("streamed", functions=(TOOL,), function_mode="AUTO"),
                                       sink))
        return fake, await asyncio.gather(*calls), chunks

    fake, answers, chunks = asyncio.run(with_cache(scenario))
    assert sorted(a.text for a in answers) == [f"answer {i}" for i in range(6)]
    assert chunks, "the streamed call streamed"
    (create,) = creates(fake)
    assert create.body["model"] == "models/gemini-test"
    assert create.body["systemInstruction"] == {"parts": [{"text": LONG}]}
    assert create.body["tools"][0]["functionDeclarations"][0]["name"] == "read_file"
    assert create.body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert create.body["ttl"] == "3600s"
    sent = generations(fake)
    assert len(sent) == 6
    names = {r.body["cachedContent"] for r in sent}
    assert len(names) == 1 and next(iter(names)).startswith("cachedContents/")
    for request in sent:
        assert not {"systemInstruction", "tools", "toolConfig"} & set(request.body), request.body
        assert request.body["contents"][-1]["role"] == "user"
    assert all(a.usage.cached > 0 for a in answers), [a.usage for a in answers]


def test_a_short_prefix_is_sent_as_it_is() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("hi", system="Answer briefly."))
        await provider.generate(ask("no system at all", system=None))
        return fake

    fake = asyncio.run(with_cache(scenario))
    assert creates(fake) == []
    first, second = generations(fake)
    assert first.body["systemInstruction"] == {"parts": [{"text": "Answer briefly."}]}
    assert "cachedContent" not in first.body and "cachedContent" not in second.body


def test_min_tokens_is_the_threshold() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("hi"))
        return fake

    assert creates(asyncio.run(with_cache(scenario, min_tokens=100_000))) == []


def test_different_prefixes_or_models_get_their_own_cache() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("a"))
        await provider.generate(ask("b", system=LONG + " Also be kind."))
        await provider.generate(ask("c", model="gemini-other"))
        await provider.generate(ask("d"))
        return fake

    fake = asyncio.run(with_cache(scenario))
    made = creates(fake)
    assert [r.body["model"] for r in made] == ["models/gemini-test", "models/gemini-test",
                                             "models/gemini-other"]
    names = [r.body["cachedContent"] for r in generations(fake)]
    assert len(set(names)) == 3 and names[3] == names[0]


def test_a_cache_the_server_lost_is_made_again_once_and_the_call_answers() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("first"))
        first = generations(fake)[0].body["cachedContent"]
        await forget_on_server(fake, first)
        fake.script(text_reply("still here"))
        answer = await provider.generate(ask("second"))
        return fake, first, answer

    fake, first, answer = asyncio.run(with_cache(scenario))
    assert answer.text == "still here"
    assert len(creates(fake)) == 2
    sent = [r.body["cachedContent"] for r in generations(fake)]
    # The first call, the second call refused (the cache is gone), then with the new cache.
    assert sent[:2] == [first, first] and sent[2] != first and len(sent) == 3


def test_a_refused_cache_falls_back_to_the_uncached_call_and_is_not_asked_again() -> None:
    # Above our threshold, below the server's minimum: the server refuses to make it.
    short = "Be exact. " * 120

    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        fake.script(text_reply("uncached 1"), text_reply("uncached 2"))
        answers = [await provider.generate(ask("one", system=short)),
                   await provider.generate(ask("two", system=short))]
        return fake, answers

    fake, answers = asyncio.run(with_cache(scenario, min_tokens=100))
    assert [a.text for a in answers] == ["uncached 1", "uncached 2"]
    assert len(creates(fake)) == 1, "a refused prefix is not asked for again at once"
    for request in generations(fake):
        assert request.body["systemInstruction"] == {"parts": [{"text": short}]}
        assert "cachedContent" not in request.body
    assert all(a.usage.cached == 0 for a in answers)


def test_a_cache_in_use_is_refreshed_before_it_expires_and_an_unused_one_lapses() -> None:
    clock = Clock()

    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("made"))
        clock.now += 3600 * 0.5
        await provider.generate(ask("plenty of time left"))
        assert [r.method for r in fake.requests].count("PATCH") == 0
        clock.now += 3600 * 0.3  # under a quarter of the TTL left
        await provider.generate(ask("refresh it"))
        for _ in range(1000):
            if "PATCH" in [r.method for r in fake.requests]:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the refresh's answer reaches the registry
        clock.now += 3600 * 0.5  # past the first expiry, within the refreshed one
        await provider.generate(ask("same cache"))
        clock.now += 3600 * 1.5  # unused for longer than the TTL: lapsed on the server
        await provider.generate(ask("new cache"))
        return fake

    fake = asyncio.run(with_cache(scenario, clock=clock))
    (patch,) = [r for r in fake.requests if r.method == "PATCH"]
    names = [r.body["cachedContent"] for r in generations(fake)]
    assert patch.path == f"/v1beta/{names[0]}" and patch.body == {"ttl": "3600s"}
    assert names[:4] == [names[0]] * 4 and names[4] != names[0]
    assert len(creates(fake)) == 2


def test_a_cache_found_gone_when_refreshed_is_made_again_by_the_next_call() -> None:
    clock = Clock()

    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("made"))
        first = generations(fake)[0].body["cachedContent"]
        await forget_on_server(fake, first)
        clock.now += 3600 * 0.8
        await provider.generate(ask("refresh it"))  # sent with the lost cache: made again
        second = generations(fake)[-1].body["cachedContent"]
        await forget_on_server(fake, second)
        clock.now += 3600 * 0.8
        await provider.generate(ask("refresh the new one"))
        for _ in range(1000):
            if [r.method for r in fake.requests].count("PATCH") == 2:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the refresh's answer reaches the registry
        failed_before = len(generations(fake))
        await provider.generate(ask("after the refresh found it gone"))
        return fake, failed_before

    fake, before = asyncio.run(with_cache(scenario, clock=clock))
    # The call after the failed refresh made a cache first: no generate was refused on the way.
    assert len(generations(fake)) == before + 1
    assert len(creates(fake)) == 3
    assert len({r.body["cachedContent"] for r in generations(fake)}) == 3


def test_close_deletes_the_caches_made_and_later_calls_go_uncached() -> None:
    async def scenario(fake: FakeGemini, provider: Provider, cache: PrefixCache):
        await provider.generate(ask("a"))
        await provider.generate(ask("b", model="gemini-other"))
        await cache.close()
        await provider.generate(ask("after close"))
        return fake

    fake = asyncio.run(with_cache(scenario))
    made = {r.body["cachedContent"] for r in generations(fake)[:2]}
    deleted = {r.path.removeprefix("/v1beta/") for r in fake.requests if r.method == "DELETE"}
    assert deleted == made
    assert "systemInstruction" in generations(fake)[2].body
    assert len(creates(fake)) == 2


@pytest.mark.parametrize(("section", "key"), [
    ({"cache": {"enabled": "yes"}}, "llm.cache.enabled"),
    ({"cache": {"min_tokens": 0}}, "llm.cache.min_tokens"),
    ({"cache": {"ttl": "10s"}}, "llm.cache.ttl"),
    ({"cache": {"ttl": "soon"}}, "llm.cache.ttl"),
    ({"cache": {"size": 3}}, "llm.cache"),
    ({"cache": [1]}, "llm.cache"),
])
def test_cache_settings_are_checked(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LLMConfig.from_section(section, {})


def test_cache_settings_and_defaults() -> None:
    assert LLMConfig.from_section({}, {}).cache == CachePolicy(enabled=True, min_tokens=1024,
                                                               ttl=3600.0)
    config = LLMConfig.from_section({"cache": {"enabled": False, "min_tokens": 4096,
                                               "ttl": "2h"}}, {})
    assert config.cache == CachePolicy(enabled=False, min_tokens=4096, ttl=7200.0)
    assert replace(config.cache, enabled=True).enabled


def test_a_manifest_sets_the_cache_of_the_kernel_it_starts(tmp_path: Path) -> None:
    from agentos.manifest import loads

    (tmp_path / "a.py").write_text("")
    manifest = loads("kernel:\n  llm:\n    cache: {min_tokens: 4096, ttl: 30m}\n"
                     "agents:\n  a: {script: a.py}\n", tmp_path / "team.yaml")
    section = manifest.kernel_config().sections["llm"]
    assert LLMConfig.from_section(section, {}).cache == CachePolicy(min_tokens=4096, ttl=1800.0)


AGENT = """
import json
from agentos import Client
c = Client()
reply = c.think("Review my change", system={system!r})
print(json.dumps({{"success": reply.success, "content": reply.content}}), flush=True)
"""


def test_two_agents_with_one_long_system_prompt_share_one_cache(llm_kernel, tmp_path: Path) -> None:
    script = tmp_path / "reviewer.py"
    script.write_text(AGENT.format(system=LONG))
    with llm_kernel.client() as c:
        for name in ("reviewer-1", "reviewer-2"):
            c.spawn(name, script, sandboxed=False, allow_degraded=True)
        for name in ("reviewer-1", "reviewer-2"):
            c.wait(name)
            answer = json.loads(c.logs(name).strip().splitlines()[-1])
            assert answer["success"], (answer, llm_kernel.log())
        logs = c.logs("reviewer-1") + c.logs("reviewer-2")
    fake = llm_kernel.fake
    (create,) = creates(fake)
    assert create.body["systemInstruction"] == {"parts": [{"text": LONG}]}
    first, second = generations(fake)
    assert first.body["cachedContent"] == second.body["cachedContent"]
    assert "systemInstruction" not in first.body and "systemInstruction" not in second.body
    name = first.body["cachedContent"]
    assert name not in logs, "the cache's name never reaches an agent"
    llm_kernel.process.stop_checked()
    assert [r.path for r in fake.requests if r.method == "DELETE"] == [f"/v1beta/{name}"]


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"cache": {"enabled": False}}))
def test_caching_can_be_turned_off(llm_kernel) -> None:
    with llm_kernel.client() as c:
        assert c.think("hi", system=LONG).success
    assert creates(llm_kernel.fake) == []
    (sent,) = generations(llm_kernel.fake)
    assert sent.body["systemInstruction"] == {"parts": [{"text": LONG}]}
