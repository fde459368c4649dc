"""Helpers for the LLM gateway tests: configs pointing at a fake server, fast retries."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentos import Client
from agentos.llm.config import LLMConfig
from agentos.llm.http import new_session
from agentos.llm.provider import Provider, make_provider
from agentos.llm.retry import RetryPolicy
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess, start_against

T = TypeVar("T")

FAST_RETRY = RetryPolicy(max_attempts=3, base=0.01, max_delay=0.05, jitter=0.1, max_wait=5.0)


def config_for(url: str, **overrides: Any) -> LLMConfig:
    """A Gemini config aimed at a fake on ``url``, with test-sized retries and timeouts."""
    base = LLMConfig(provider="gemini", model="gemini-test", base_url=url, api_key="fake-key",
                     api_key_source="GEMINI_API_KEY", timeout=5.0, stream_idle_timeout=5.0,
                     retry=FAST_RETRY)
    return replace(base, **overrides)


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


class LLMKernel:
    """A kernel subprocess wired to a fake Gemini running in this process."""

    def __init__(self, root: Path, fake: FakeGemini, env: dict[str, str]) -> None:
        self.fake = fake
        self.process = KernelProcess(root, env=env)

    def client(self) -> Client:
        return self.process.client()

    def start(self) -> None:
        start_against(self.process, self.fake)

    def restart(self) -> None:
        start_against(self.process, self.fake, self.process.restart)

    def log(self) -> str:
        return self.process.log()


@pytest.fixture
def llm_kernel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LLMKernel]:
    """A real kernel talking to a fake Gemini; ``@pytest.mark.llm_env(...)`` adds environment.

    The kernel gets the fake's URL through AGENTOS_GEMINI_BASE_URL and the key through
    GEMINI_API_KEY, exactly as a user would configure it.
    """
    marker = request.node.get_closest_marker("llm_env")
    extra: dict[str, str] = dict(marker.kwargs) if marker else {}
    with FakeGemini().running_in_thread() as fake:
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
               "AGENTOS_GEMINI_MODEL": "gemini-test", "AGENTOS_LLM_BACKOFF_BASE": "0.01",
               "GOOGLE_API_KEY": ""}
        env.update(extra)
        kernel = LLMKernel(tmp_path / "k", fake, env)
        kernel.start()
        try:
            yield kernel
        finally:
            status = kernel.process.stop()
    log = kernel.log()
    assert status == 0, f"kernel exited with {status}:\n{log}"
    assert not kernel.process.socket_path.exists(), "kernel left its socket file behind"
    assert "Traceback" not in log, f"kernel logged a traceback:\n{log}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llm_env(**env): extra environment for the llm_kernel fixture")
