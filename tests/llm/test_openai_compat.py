"""The OpenAI-compatible provider against the fake Chat Completions server over real HTTP."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ujson

from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.http import new_session
from agentos.llm.provider import make_provider
from agentos.llm.types import GenerationOptions, ModelRequest
from agentos.testing import FakeOpenAI, Reply, call_reply, error_reply, text_reply

HELLO = ModelRequest(contents=[{"role": "user", "parts": [{"text": "Hello"}]}], system="Be brief.")
ADD = {"name": "add", "description": "Add two integers",
       "parameters": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}, "b": {"type": "INTEGER"}},
                      "required": ["a", "b"]}}


@pytest.fixture
def run_openai(config_for):
    """``run_openai(scenario, api_key=..., **config)`` against a fresh FakeOpenAI."""
    def runner(scenario, *, api_key: str | None = "local-key", **overrides: Any):
        return asyncio.run(_main(config_for, scenario, api_key, overrides))
    return runner


async def _main(config_for, scenario, api_key, overrides):
    async with FakeOpenAI(api_key=api_key) as fake:
        config = config_for(fake.base_url, provider="openai", model="llama-test",
                            api_key=api_key, **overrides)
        async with new_session(config) as session:
            return await scenario(fake, make_provider(config, session))


def test_completion_request_and_answer(run_openai) -> None:
    async def scenario(fake, provider):
        fake.script(text_reply("Hi!"))
        answer = await provider.generate(ModelRequest(
            contents=HELLO.contents, system="Be brief.",
            options=GenerationOptions(temperature=0.1, max_output_tokens=32, stop=("END",),
                                      response_mime_type="application/json")))
        return fake.requests[0], answer

    sent, answer = run_openai(scenario)
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer local-key"
    assert sent.body["model"] == "llama-test"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Hello"}]
    assert (sent.body["temperature"], sent.body["max_tokens"], sent.body["stop"]) == (0.1, 32, ["END"])
    assert sent.body["response_format"] == {"type": "json_object"}
    assert answer.text == "Hi!" and answer.finish_reason == "stop"
    assert answer.usage.total == answer.usage.prompt + answer.usage.output > 0
    assert answer.turn == {"role": "model", "parts": [{"text": "Hi!"}]}


def test_stream_with_usage_chunk_and_done_marker(run_openai) -> None:
    async def scenario(fake, provider):
        fake.script(text_reply("one two three four", chunks=4))
        chunks: list[dict] = []

        async def sink(delta: dict) -> None:
            chunks.append(delta)

        answer = await provider.generate(HELLO, on_chunk=sink)
        return fake.requests[0].body, chunks, answer

    body, chunks, answer = run_openai(scenario)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert len(chunks) == 4 and "".join(c["text"] for c in chunks) == "one two three four"
    assert answer.text == "one two three four"
    assert answer.usage.output > 0, "usage comes from the final usage-only chunk"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(run_openai, stream: bool) -> None:
    async def scenario(fake, provider):
        fake.script(call_reply(("add", {"a": 2, "b": 40})), text_reply("42"))
        seen: list[dict] = []

        async def sink(delta: dict) -> None:
            seen.append(delta)

        first = await provider.generate(ModelRequest(contents=HELLO.contents, functions=(ADD,)),
                                        on_chunk=sink if stream else None)
        (call,) = first.function_calls
        result = {"role": "user", "parts": [{"functionResponse": {
            "id": call["id"], "name": "add", "response": {"result": 42}}}]}
        second = await provider.generate(ModelRequest(
            contents=[*HELLO.contents, first.turn, result], functions=(ADD,)))
        return fake.requests, seen, first, second

    requests, seen, first, second = run_openai(scenario)
    tool = requests[0].body["tools"][0]
    assert tool == {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}}
    (call,) = first.function_calls
    assert call["name"] == "add" and call["args"] == {"a": 2, "b": 40} and call["id"].startswith("call_")
    if stream:
        assert seen == [{"function_call": call}], "fragments are surfaced once, reassembled"
    messages = requests[1].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function",
         "function": {"name": "add", "arguments": ujson.dumps({"a": 2, "b": 40})}}]}
    assert messages[-1] == {"role": "tool", "tool_call_id": call["id"], "content": '{"result":42}'}
    assert second.text == "42"


def test_bad_key_is_auth(run_openai) -> None:
    async def scenario(fake, provider):
        with pytest.raises(LLMError) as caught:
            await provider.generate(HELLO)
        return caught.value, len(fake.requests)

    async def wrong_key(fake, provider):
        fake.api_key = "other"
        return await scenario(fake, provider)

    error, attempts = run_openai(wrong_key)
    assert error.kind is ErrorKind.AUTH and attempts == 1


def test_retry_after_header_is_honoured(run_openai) -> None:
    async def scenario(fake, provider):
        fake.script(error_reply(429, "slow down", retry_delay=0.25), text_reply("ok"))
        answer = await provider.generate(HELLO)
        return answer.text, [r.at for r in fake.requests]

    text, arrivals = run_openai(scenario)
    assert text == "ok" and arrivals[1] - arrivals[0] >= 0.25


@pytest.mark.parametrize("reply,kind", [
    (Reply(status=500), ErrorKind.UNAVAILABLE),
    (Reply(malformed=True), ErrorKind.UNAVAILABLE),
    (Reply(status=400, message="bad"), ErrorKind.INVALID_REQUEST),
])
def test_errors(run_openai, reply: Reply, kind: ErrorKind) -> None:
    async def scenario(fake, provider):
        fake.script(*[reply] * 3)
        with pytest.raises(LLMError) as caught:
            await provider.generate(HELLO)
        return caught.value

    assert run_openai(scenario).kind is kind


def test_truncated_stream_after_text_is_an_error(run_openai) -> None:
    async def scenario(fake, provider):
        fake.script(Reply(text="abcdef", chunks=3, truncate_after=2))

        async def sink(delta: dict) -> None:
            pass

        with pytest.raises(LLMError) as caught:
            await provider.generate(HELLO, on_chunk=sink)
        return caught.value, len(fake.requests)

    error, attempts = run_openai(scenario)
    assert error.kind is ErrorKind.UNAVAILABLE and "finish_reason" in error.message and attempts == 1


def test_keyless_local_server(run_openai) -> None:
    async def scenario(fake, provider):
        answer = await provider.generate(HELLO)
        return answer.text, fake.requests[0].headers

    text, headers = run_openai(scenario, api_key=None)
    assert text == "echo: Hello" and "Authorization" not in headers
