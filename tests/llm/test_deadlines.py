"""One deadline per THINK covers queueing, attempts and waits; a missing endpoint fails fast.

Speed is asserted as counts (attempts made, requests seen), never as wall-clock time:
the numbers are in the issue-10 report and docs/llm.md.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from agentos.errors import InvalidArgument
from agentos.llm.config import LLMConfig
from agentos.llm.deadline import Deadline
from agentos.llm.errors import ConnectFailed, ErrorKind, LLMError
from agentos.llm.provider import make_provider
from agentos.llm.ratelimits import RateLimits
from agentos.llm.request import parse_json
from agentos.llm.retry import RetryPolicy
from agentos.llm.scheduler import FairScheduler
from agentos.llm.types import ModelRequest
from agentos.manifest import loads
from agentos.protocol import Op
from agentos.testing import FakeGemini, Reply, error_reply, text_reply

from .conftest import config_for

HELLO = ModelRequest(contents=[{"role": "user", "parts": [{"text": "hello"}]}])
#: The production policy (1 s first backoff, 5 attempts): a slip back to it is seen in the counts.
PRODUCTION = RetryPolicy()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Silent:
    """A TCP server that reads requests and never answers: a hung endpoint. It sees each
    connection close, so a test can tell the kernel really hung up."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Silent:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(65536):
            pass
        self.closed.set()
        writer.close()


@asynccontextmanager
async def counting_session() -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    """A client session that records every request it starts (one per attempt)."""
    started: list[str] = []

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        started.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield session, started


def run_with_fake(test: Any) -> Any:
    """``asyncio.run(test(fake, None))`` with a fresh FakeGemini."""
    async def main() -> Any:
        async with FakeGemini() as fake:
            return await test(fake, None)
    return asyncio.run(main())


# --- fast failure -------------------------------------------------------------------------

@pytest.mark.parametrize("base_url", [f"http://127.0.0.1:{closed_port()}", "http://no-such-host.invalid"],
                         ids=["refused", "dns"])
def test_an_endpoint_that_cannot_be_connected_to_fails_after_a_short_bounded_retry(base_url: str) -> None:
    async def main() -> tuple[LLMError, list[str]]:
        config = config_for(base_url, retry=PRODUCTION)
        async with counting_session() as (session, started):
            with pytest.raises(LLMError) as caught:
                await make_provider(config, session).generate(HELLO)
        return caught.value, started

    error, started = asyncio.run(main())
    assert isinstance(error, ConnectFailed)
    assert len(started) == PRODUCTION.connect_attempts == 3
    assert error.kind is ErrorKind.UNAVAILABLE and error.reason == "connect_failed"
    assert base_url in error.message and error.to_dict()["type"] == "unavailable"


def test_the_connect_retry_is_configurable() -> None:
    config = LLMConfig.from_section({"retry": {"connect_attempts": 1, "connect_backoff": "50ms"}}, {})
    assert (config.retry.connect_attempts, config.retry.connect_backoff) == (1, 0.05)
    with pytest.raises(ValueError, match="llm.retry.connect_attempts"):
        LLMConfig.from_section({"retry": {"connect_attempts": 0}}, {})


# --- the deadline -------------------------------------------------------------------------

def test_a_hung_endpoint_answers_deadline_exceeded_and_the_request_is_closed() -> None:
    async def main() -> tuple[LLMError, int]:
        async with Silent() as server:
            # Each attempt alone could wait a minute: the deadline cuts the first one short.
            config = config_for(server.url, timeout=60.0, retry=PRODUCTION)
            async with aiohttp.ClientSession() as session:
                with pytest.raises(LLMError) as caught:
                    await make_provider(config, session).generate(HELLO, deadline=Deadline.after(0.3))
                await asyncio.wait_for(server.closed.wait(), timeout=30)
            return caught.value, server.connections

    error, connections = asyncio.run(main())
    assert error.kind is ErrorKind.DEADLINE_EXCEEDED and not error.retryable
    assert "0.3s" in error.message
    assert connections == 1


def test_the_deadline_covers_every_attempt_and_backoff() -> None:
    async def main(fake: FakeGemini, _: Any) -> tuple[LLMError, int]:
        fake.script(*[error_reply(503) for _ in range(5)])
        # Backoffs of 1, 2, 4, 8 s: within 1.5 s there is time for the first only.
        config = config_for(fake.url, retry=RetryPolicy(max_attempts=5, base=1.0, jitter=0.0))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(LLMError) as caught:
                await make_provider(config, session).generate(HELLO, deadline=Deadline.after(1.5))
        return caught.value, len(fake.requests)

    error, requests = run_with_fake(main)
    # The wait that would outlast the deadline is not started: the last error comes at once.
    assert requests == 2
    assert error.kind is ErrorKind.UNAVAILABLE and error.status == 503


def test_a_rate_limit_longer_than_the_deadline_is_not_waited_for() -> None:
    async def main(fake: FakeGemini, _: Any) -> tuple[LLMError, LLMError, int]:
        fake.script(error_reply(429, retry_delay=30))
        config = config_for(fake.url, retry=RetryPolicy(max_attempts=5, base=0.01, max_wait=300.0))
        gate = RateLimits().gate("m", FairScheduler(4), "agent")
        async with aiohttp.ClientSession() as session:
            provider = make_provider(config, session)
            errors = []
            for _ in range(2):
                with pytest.raises(LLMError) as caught:
                    await provider.generate(HELLO, gate=gate, deadline=Deadline.after(5.0))
                errors.append(caught.value)
        return errors[0], errors[1], len(fake.requests)

    first, second, requests = run_with_fake(main)
    assert first.kind is second.kind is ErrorKind.RATE_LIMITED
    assert first.retry_after == 30 and second.retry_after is not None and second.retry_after > 25
    # The second call saw the model paused for longer than it had: no request, no wait.
    assert requests == 1


def test_queueing_for_a_slot_counts_against_the_deadline() -> None:
    async def main(fake: FakeGemini, _: Any) -> tuple[LLMError, int, int, int]:
        fake.script(Reply(text="slow", delay=30))
        scheduler = FairScheduler(1)
        limits = RateLimits()
        async with aiohttp.ClientSession() as session:
            provider = make_provider(config_for(fake.url), session)
            holder = asyncio.create_task(provider.generate(HELLO, gate=limits.gate("m", scheduler, "a")))
            while not fake.requests:
                await asyncio.sleep(0.01)
            with pytest.raises(LLMError) as caught:
                await provider.generate(HELLO, gate=limits.gate("m", scheduler, "b"),
                                        deadline=Deadline.after(0.3))
            queued = scheduler.queued()
            holder.cancel()
            await asyncio.wait([holder])
        return caught.value, queued, scheduler.in_flight, len(fake.requests)

    error, queued, in_flight, requests = run_with_fake(main)
    assert error.kind is ErrorKind.DEADLINE_EXCEEDED
    assert (queued, in_flight, requests) == (0, 0, 1)


def test_a_stream_cut_off_by_the_deadline_keeps_its_chunks_and_is_not_retried() -> None:
    async def main(fake: FakeGemini, _: Any) -> tuple[LLMError, list[dict[str, Any]], int]:
        fake.script(text_reply("first second", chunks=2, chunk_delay=30))
        chunks: list[dict[str, Any]] = []

        async def sink(delta: dict[str, Any]) -> None:
            chunks.append(delta)

        async with aiohttp.ClientSession() as session:
            with pytest.raises(LLMError) as caught:
                await make_provider(config_for(fake.url), session).generate(
                    HELLO, on_chunk=sink, deadline=Deadline.after(1.0))
        return caught.value, chunks, len(fake.requests)

    error, chunks, requests = run_with_fake(main)
    assert error.kind is ErrorKind.DEADLINE_EXCEEDED
    assert chunks == [{"text": "first "}] and requests == 1


def test_a_call_without_a_deadline_gets_the_configured_one() -> None:
    async def main() -> LLMError:
        async with Silent() as server:
            config = config_for(server.url, timeout=60.0, deadline=0.2)
            async with aiohttp.ClientSession() as session:
                with pytest.raises(LLMError) as caught:
                    await make_provider(config, session).generate(HELLO)
            return caught.value

    assert asyncio.run(main()).kind is ErrorKind.DEADLINE_EXCEEDED


# --- configuration and the THINK field ----------------------------------------------------

def test_deadline_keys_and_their_defaults() -> None:
    default = LLMConfig.from_section({}, {})
    # The old worst case, 5 attempts of 120 s plus backoff, was about 10 minutes.
    assert default.deadline == 300.0 and default.max_deadline == 900.0
    config = LLMConfig.from_section({"deadline": "90s", "max_deadline": "10m"}, {})
    assert (config.deadline, config.max_deadline) == (90.0, 600.0)
    assert config.deadline_for(None) == 90.0
    assert config.deadline_for(5) == 5.0
    assert config.deadline_for(3600) == 600.0  # capped, not refused
    # A default above the built-in cap raises the cap with it.
    assert LLMConfig.from_section({"deadline": "20m"}, {}).max_deadline == 1200.0


def test_a_manifest_sets_the_deadlines() -> None:
    manifest = loads("kernel:\n  llm: {deadline: 90s, max_deadline: 10m}\n"
                     "agents:\n  a: {command: [/bin/true]}\n", "/tmp/deadlines.yaml")
    config = LLMConfig.from_section(manifest.kernel_config().section("llm"), {})
    assert (config.deadline, config.max_deadline) == (90.0, 600.0)


@pytest.mark.parametrize(("section", "key"), [
    ({"deadline": 0}, "llm.deadline"), ({"deadline": "soon"}, "llm.deadline"),
    ({"deadline": "60s", "max_deadline": "30s"}, "llm.max_deadline")])
def test_bad_deadline_keys_are_refused_naming_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        LLMConfig.from_section(section, {})


def test_think_timeout_field() -> None:
    assert parse_json({"prompt": "x", "timeout": 2.5}).timeout == 2.5
    assert parse_json({"prompt": "x", "timeout": 30}).timeout == 30.0
    assert parse_json({"prompt": "x"}).timeout is None
    bad: object
    for bad in (0, -1, "10s", True, [], 10 ** 400):
        with pytest.raises(InvalidArgument, match="timeout"):
            parse_json({"prompt": "x", "timeout": bad})


# --- through the kernel ---------------------------------------------------------------------

def test_a_think_timeout_ends_the_call_with_deadline_exceeded(llm_kernel) -> None:
    llm_kernel.fake.script(Reply(text="late", delay=30),
                           text_reply("first second", chunks=2, chunk_delay=30))
    with llm_kernel.client() as c:
        answer = c.think("x", timeout=0.5)
        stream = c.think_stream("y", timeout=1)
        pieces = list(stream)
        with pytest.raises(InvalidArgument, match="timeout"):
            c._call(Op.THINK, {"prompt": "z", "timeout": "soon"})
        assert c.think("still fine").success
    assert not answer.success and answer.error is not None
    assert answer.error["type"] == "deadline_exceeded"
    assert pieces == ["first "]
    assert stream.reply is not None and stream.reply.error is not None
    assert stream.reply.error["type"] == "deadline_exceeded"
    assert len(llm_kernel.fake.requests) == 3


@pytest.mark.llm_env(AGENTOS_GEMINI_BASE_URL=f"http://127.0.0.1:{closed_port()}")
def test_a_kernel_whose_endpoint_refuses_connections_answers_unavailable(llm_kernel) -> None:
    with llm_kernel.client() as c:
        reply = c.think("anyone there?")
    assert not reply.success and reply.error is not None
    assert reply.error["type"] == "unavailable" and reply.error["reason"] == "connect_failed"
    assert "cannot connect to http://127.0.0.1:" in reply.error["message"]
