"""Model fallback chains against the fake Gemini over real HTTP: when a model is given up on,
what the reply and USAGE say, and who may name which models."""
from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

import pytest

from agentos.errors import InvalidArgument, PermissionDenied
from agentos.llm.config import LLMConfig
from agentos.llm.deadline import Deadline
from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.fallback import ModelChain
from agentos.llm.provider import Provider
from agentos.llm.ratelimits import RateLimits, model_key
from agentos.llm.request import parse_json
from agentos.llm.scheduler import FairScheduler
from agentos.llm.types import Completion, ModelRequest
from agentos.protocol.requests import LLMWire
from agentos.testing import FakeGemini, Reply, error_reply, text_reply
from tests.llm.test_service import _service, _think

HELLO = ModelRequest(contents=[{"role": "user", "parts": [{"text": "Hello"}]}])
CHAIN = ("gemini-flash", "gemini-lite")


def _chain(provider: Provider, limits: RateLimits, models: tuple[str, ...] = CHAIN) -> ModelChain:
    scheduler = FairScheduler(4)
    return ModelChain(models, lambda model: limits.gate(
        model_key(provider.config.base_url, model), scheduler, "agent:a"), provider.config.retry)


def _paths(fake: FakeGemini) -> list[str]:
    """``model:action`` of each model call (the kernel also lists models when it starts)."""
    return [r.path.rsplit("/", 1)[1] for r in fake.requests if ":" in r.path]


async def _run(chain: ModelChain, provider: Provider, on_chunk: Any = None,
               deadline: Deadline | None = None) -> Completion | LLMError:
    try:
        return await chain.generate(partial(provider.generate, deadline=deadline), HELLO, on_chunk)
    except LLMError as error:
        return error


def test_a_rate_limited_model_hands_the_call_on_and_is_skipped_while_paused(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        limits = RateLimits()
        fake.script(error_reply(429, retry_delay=30), text_reply("from lite"))
        first_chain = _chain(provider, limits)
        first = await _run(first_chain, provider)
        first_paths = _paths(fake)
        fake.reset()
        fake.script(text_reply("again"))
        second = await _run(_chain(provider, limits), provider)
        return first, first_paths, first_chain.model, second, _paths(fake)

    first, first_paths, answered, second, second_paths = gemini(scenario)
    assert isinstance(first, Completion) and first.text == "from lite"
    assert first.model == "gemini-lite" and answered == "gemini-lite"
    assert first_paths == ["gemini-flash:generateContent", "gemini-lite:generateContent"], \
        "no retry and no wait on a model that has a successor"
    (failed,) = first.fallbacks
    assert failed["model"] == "gemini-flash"
    assert failed["error"]["type"] == "rate_limited" and failed["error"]["retry_after"] == 30
    # The pause stays with the model: the next call does not ask it again.
    assert isinstance(second, Completion) and second.text == "again"
    assert second_paths == ["gemini-lite:generateContent"]
    (skipped,) = second.fallbacks
    assert skipped["model"] == "gemini-flash" and skipped["error"]["type"] == "rate_limited"
    assert "paused" in skipped["error"]["message"] and 0 < skipped["error"]["retry_after"] <= 30


@pytest.mark.parametrize("fault,kind", [(error_reply(503), "unavailable"),
                                        (error_reply(500), "unavailable"),
                                        (Reply(malformed=True), "unavailable"),
                                        (Reply(text="late", delay=30), "timeout")])
def test_a_failing_or_slow_model_is_tried_once_then_the_next(gemini, fault: Reply, kind: str) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(fault, text_reply("lite answers"))
        return await _run(_chain(provider, RateLimits()), provider), _paths(fake)

    answer, paths = gemini(scenario, timeout=0.5)
    assert isinstance(answer, Completion) and answer.text == "lite answers"
    assert paths == ["gemini-flash:generateContent", "gemini-lite:generateContent"]
    assert [(f["model"], f["error"]["type"]) for f in answer.fallbacks] == [("gemini-flash", kind)]


def test_the_last_model_keeps_its_retries(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(error_reply(503), error_reply(500), text_reply("third time"))
        return await _run(_chain(provider, RateLimits()), provider), _paths(fake)

    answer, paths = gemini(scenario)
    assert isinstance(answer, Completion) and answer.text == "third time"
    assert paths == ["gemini-flash:generateContent", *["gemini-lite:generateContent"] * 2]
    assert [f["model"] for f in answer.fallbacks] == ["gemini-flash"]


def test_a_refused_request_is_not_sent_to_another_model(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(error_reply(400, "Invalid value at 'contents'"))
        chain = _chain(provider, RateLimits())
        return await _run(chain, provider), chain, _paths(fake)

    error, chain, paths = gemini(scenario)
    assert isinstance(error, LLMError) and error.kind is ErrorKind.INVALID_REQUEST
    assert paths == ["gemini-flash:generateContent"]
    assert chain.failed == [] and chain.model == "gemini-flash"


def test_when_every_model_fails_the_last_error_is_raised_and_each_is_recorded(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(error_reply(429, retry_delay=30), *[error_reply(503)] * 3)
        chain = _chain(provider, RateLimits())
        return await _run(chain, provider), chain

    error, chain = gemini(scenario)
    assert isinstance(error, LLMError) and error.kind is ErrorKind.UNAVAILABLE
    assert [f["model"] for f in chain.failed] == ["gemini-flash"] and chain.model == "gemini-lite"


def test_no_other_model_once_text_was_streamed(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        pieces: list[dict] = []

        async def sink(delta: dict) -> None:
            pieces.append(delta)

        fake.script(Reply(text="abcdef", chunks=3, error_after=1), text_reply("never"))
        return await _run(_chain(provider, RateLimits()), provider, sink), pieces, _paths(fake)

    error, pieces, paths = gemini(scenario)
    assert isinstance(error, LLMError) and error.kind is ErrorKind.UNAVAILABLE
    assert pieces == [{"text": "ab"}]
    assert paths == ["gemini-flash:streamGenerateContent"]


def test_a_stream_falls_back_before_its_first_chunk(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        pieces: list[str] = []

        async def sink(delta: dict) -> None:
            pieces.append(delta["text"])

        fake.script(error_reply(429, retry_delay=30), text_reply("streamed lite", chunks=2))
        return await _run(_chain(provider, RateLimits()), provider, sink), pieces

    answer, pieces = gemini(scenario)
    assert isinstance(answer, Completion) and "".join(pieces) == answer.text == "streamed lite"
    assert [f["model"] for f in answer.fallbacks] == ["gemini-flash"]


def test_the_chain_shares_one_deadline(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(text="late", delay=30), text_reply("too late to ask"))
        chain = _chain(provider, RateLimits())
        return await _run(chain, provider, deadline=Deadline.after(0.3)), chain, _paths(fake)

    error, chain, paths = gemini(scenario)
    assert isinstance(error, LLMError) and error.kind is ErrorKind.DEADLINE_EXCEEDED
    assert paths == ["gemini-flash:generateContent"] and chain.failed == []


# --- THINK: parsing, policy, reply, usage ------------------------------------------------------

@pytest.mark.parametrize("model,message", [
    ([], "list of 1 to 8"), (["a"] * 2, r"model\[1\]: 'a' is already in the chain"),
    (["a", 3], r"model\[1\] must be a non-empty model name"), (["a", ""], r"model\[1\]"),
    ([f"m{i}" for i in range(9)], "list of 1 to 8"), ({"a": 1}, "model name or a list")])
def test_a_malformed_chain_is_invalid_argument_naming_the_entry(model: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_json({"prompt": "x", "model": model})


def test_chains_in_the_kernel_configuration_are_checked_naming_the_key() -> None:
    config = LLMConfig.from_section({"model": ["a", "b"], "defaults": {"model": ["c", "d"]}}, {})
    assert (config.model, config.fallback_models, config.defaults.default_models) == (
        "a", ("b",), ("c", "d"))
    with pytest.raises(ValueError, match=r"llm.agents.x.model\[1\]"):
        LLMConfig.from_section({"agents": {"x": {"model": ["c", "c"]}}}, {})
    with pytest.raises(ValueError, match=r"llm.model"):
        LLMConfig.from_section({"model": []}, {})


def test_think_with_a_chain_replies_who_answered_and_usage_counts_each_model(
        tmp_path, monkeypatch) -> None:
    section = {"agents": {"writer": {"models": ["gemini-flash", "gemini-lite"]}}}

    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, section)
            try:
                service.callers.agent_started("a1", "writer", None, None)
                fake.script(error_reply(503), text_reply("lite here"))
                body = {"prompt": "x", "model": ["gemini-flash", "gemini-lite"]}
                answered = json.loads(await service.think(_think(kernel, "a1", body)))
                fake.script(error_reply(503), error_reply(400, "bad"))
                failed = json.loads(await service.think(_think(kernel, "a1", body)))
                usage = service._report("agent:a1")
                return answered, failed, usage
            finally:
                await service.stop()

    answered, failed, usage = asyncio.run(main())
    assert answered["success"] and answered["content"] == "lite here"
    assert answered["model"] == "gemini-lite"
    assert [(f["model"], f["error"]["type"], f["error"]["status"]) for f in answered["fallbacks"]] == [
        ("gemini-flash", "unavailable", 503)]
    assert not failed["success"] and failed["model"] == "gemini-lite"
    assert failed["error"]["type"] == "invalid_request"
    assert [f["model"] for f in failed["fallbacks"]] == ["gemini-flash"]
    models = usage["models"]
    assert (models["gemini-flash"]["calls"], models["gemini-flash"]["errors"]) == (2, 2)
    assert (models["gemini-lite"]["calls"], models["gemini-lite"]["errors"]) == (2, 1)
    assert models["gemini-lite"]["tokens"]["total"] == answered["tokens"]["total"] > 0
    assert models["gemini-flash"]["tokens"]["total"] == 0


def test_every_model_of_a_chain_must_be_allowed(tmp_path, monkeypatch) -> None:
    section = {"agents": {"writer": {"models": ["gemini-flash"]}}}

    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, section)
            try:
                service.callers.agent_started("a1", "writer", None, None)
                body = {"prompt": "x", "model": ["gemini-flash", "gemini-pro"]}
                with pytest.raises(PermissionDenied) as denied:
                    await service.think(_think(kernel, "a1", body))
                # The kernel's own model needs no permission, wherever it stands in the chain.
                fake.script(error_reply(429, retry_delay=30))
                kernel_model = json.loads(await service.think(_think(
                    kernel, "a1", {"prompt": "x", "model": ["gemini-flash", "gemini-test"]})))
                return denied.value, kernel_model, _paths(fake)
            finally:
                await service.stop()

    denied, kernel_model, paths = asyncio.run(main())
    assert denied.details == {"model": "gemini-pro", "field": "model[1]"}
    assert kernel_model["success"] and kernel_model["model"] == "gemini-test"
    assert paths == ["gemini-flash:generateContent", "gemini-test:generateContent"]


def test_an_agents_chain_from_its_manifest_or_its_policy_is_its_default(tmp_path, monkeypatch) -> None:
    section = {"agents": {"planner": {"model": ["gemini-plan", "gemini-lite"]}}}

    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, section)
            try:
                service.callers.agent_started("a1", "writer", None, None,
                                              LLMWire(model=["gemini-writer", "gemini-lite"]))
                service.callers.agent_started("p1", "planner", None, None)
                fake.script(error_reply(429, retry_delay=30), text_reply("w"),
                            error_reply(503), text_reply("p"))
                writer = json.loads(await service.think(_think(kernel, "a1", {"prompt": "x"})))
                planner = json.loads(await service.think(_think(kernel, "p1", {"prompt": "x"})))
                return writer, planner, _paths(fake)
            finally:
                await service.stop()

    writer, planner, paths = asyncio.run(main())
    assert writer["model"] == "gemini-lite" and writer["fallbacks"][0]["model"] == "gemini-writer"
    assert planner["model"] == "gemini-lite" and planner["fallbacks"][0]["model"] == "gemini-plan"
    assert paths == ["gemini-writer:generateContent", "gemini-lite:generateContent",
                     "gemini-plan:generateContent", "gemini-lite:generateContent"]


@pytest.mark.llm_env(AGENTOS_GEMINI_MODEL="",
                     AGENTOS_LLM_CONFIG=json.dumps({"model": ["gemini-test", "gemini-lite"]}))
def test_the_kernels_chain_serves_calls_that_name_no_model(llm_kernel) -> None:
    fake = llm_kernel.fake
    with llm_kernel.client() as c:
        fake.script(error_reply(429, retry_delay=30), text_reply("lite"))
        reply = c.think("hello")
        usage = c.usage()
    assert _paths(fake) == ["gemini-test:generateContent", "gemini-lite:generateContent"]
    assert reply.success and reply.model == "gemini-lite" and reply.content == "lite"
    assert [(f["model"], f["error"]["type"]) for f in reply.fallbacks] == [("gemini-test", "rate_limited")]
    models = usage["agents"][usage["you"]]["models"]
    assert models["gemini-test"]["errors"] == 1 and models["gemini-lite"]["errors"] == 0
