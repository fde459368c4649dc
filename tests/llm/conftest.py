"""Helpers for the LLM gateway tests: configs pointing at a fake server, fast retries."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import pytest

from agentos.llm.config import LLMConfig
from agentos.llm.http import new_session
from agentos.llm.provider import Provider, make_provider
from agentos.llm.retry import RetryPolicy
from agentos.testing import FakeGemini

T = TypeVar("T")

FAST_RETRY = RetryPolicy(max_attempts=3, base=0.01, max_delay=0.05, jitter=0.1, max_wait=5.0)


def config_for(url: str, **overrides: Any) -> LLMConfig:
    """A Gemini config aimed at a fake on ``url``, with test-sized retries and timeouts."""
    base = LLMConfig(provider="gemini", model="gemini-test", base_url=url, api_key="fake-key",
                     api_key_source="GEMINI_API_KEY", timeout=5.0, stream_idle_timeout=5.0,
                     retry=FAST_RETRY)
    return replace(base, **overrides)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


async def with_gemini(test: Callable[[FakeGemini, Provider], Awaitable[T]],
                      **config_overrides: Any) -> T:
    """Run ``test(fake, provider)`` with a fresh fake and a provider on a real session."""
    async with FakeGemini() as fake:
        config = config_for(fake.url, **config_overrides)
        async with new_session(config) as session:
            return await test(fake, make_provider(config, session))


@pytest.fixture(name="config_for")
def config_for_fixture() -> Callable[..., LLMConfig]:
    """``config_for(url, **overrides)``: a test config aimed at a fake."""
    return config_for


@pytest.fixture
def gemini() -> Callable[..., Any]:
    """``gemini(test, **config)`` runs an async test against a fake Gemini and returns its result."""
    def runner(test: Callable[[FakeGemini, Provider], Awaitable[T]], **overrides: Any) -> T:
        return asyncio.run(with_gemini(test, **overrides))
    return runner
