"""The Gemini provider against the fake Gemini over real HTTP on 127.0.0.1."""
from __future__ import annotations

from typing import Any

import pytest

from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.provider import Provider
from agentos.llm.types import GenerationOptions, ModelRequest
from agentos.testing import (
    FakeGemini,
    Reply,
    call_reply,
    count_tokens,
    error_reply,
    text_reply,
)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


HELLO = ModelRequest(contents=[user("Hello there")])


def test_generate_sends_the_documented_request_and_reads_the_answer(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(text_reply("General Kenobi!"))
        request = ModelRequest(
            contents=[user("Hello there")], system="Answer briefly.",
            options=GenerationOptions(temperature=0.2, top_p=0.9, top_k=40, max_output_tokens=64,
                                      stop=("END",), thinking_budget=0))
        return fake, await provider.generate(request)

    fake, answer = gemini(scenario)
    assert answer.text == "General Kenobi!"
    assert answer.finish_reason == "stop"
    assert answer.model == "gemini-test"
    prompt = count_tokens("Hello thereAnswer briefly.")
    assert answer.usage.prompt == prompt
    assert answer.usage.output == count_tokens("General Kenobi!")
    assert answer.usage.total == prompt + answer.usage.output
    (sent,) = fake.requests
    assert sent.path == "/v1beta/models/gemini-test:generateContent"
    assert sent.headers["x-goog-api-key"] == "fake-key"
    assert "key" not in sent.query, "the API key must not travel in the URL"
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Answer briefly."}]}
    assert sent.body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 64,
        "stopSequences": ["END"], "thinkingConfig": {"thinkingBudget": 0}}


def test_api_version_is_configurable(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        await provider.generate(HELLO)
        return fake.requests[0].path

    assert gemini(scenario, api_version="v1") == "/v1/models/gemini-test:generateContent"


def test_stream_reassembles_chunks_and_keeps_the_last_usage(gemini) -> None:
    text = "The quick brown fox jumps over the lazy dog."

    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(text_reply(text, chunks=5, thought_signature="c2lnLWVuZA=="))
        chunks: list[dict] = []

        async def sink(delta: dict) -> None:
            chunks.append(delta)

        return fake, chunks, await provider.generate(HELLO, on_chunk=sink)

    fake, chunks, answer = gemini(scenario)
    assert len(chunks) == 5
    assert "".join(c["text"] for c in chunks) == text == answer.text
    assert fake.requests[0].query == {"alt": "sse"}
    assert fake.requests[0].path.endswith(":streamGenerateContent")
    assert answer.usage.output == count_tokens(text)
    # The final empty part carrying the signature is kept verbatim in the turn.
    assert answer.turn == {"role": "model", "parts": [
        {"text": text}, {"text": "", "thoughtSignature": "c2lnLWVuZA=="}]}


def test_function_call_round_trip_replays_the_turn_verbatim(gemini) -> None:
    weather = {"name": "get_weather", "description": "Current weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}

    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(call_reply(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
                               thought_signature="c2lnMQ=="),
                    text_reply("Paris is sunny, Rome is rainy."))
        history = [user("Weather in Paris and Rome?")]
        first = await provider.generate(ModelRequest(contents=history, functions=(weather,)))
        answers = {"Paris": "sunny", "Rome": "rain"}
        replies = {"role": "user", "parts": [
            {"functionResponse": {"id": c["id"], "name": c["name"],
                                  "response": {"result": answers[c["args"]["city"]]}}}
            for c in first.function_calls]}
        second = await provider.generate(ModelRequest(
            contents=[*history, first.turn, replies], functions=(weather,)))
        stripped = {"role": "model", "parts": [
            {k: v for k, v in p.items() if k != "thoughtSignature"} for p in first.turn["parts"]]}
        with pytest.raises(LLMError) as lost:
            await provider.generate(ModelRequest(contents=[*history, stripped, replies],
                                                 functions=(weather,)))
        return fake, first, second, lost.value

    fake, first, second, lost = gemini(scenario)
    assert [c["name"] for c in first.function_calls] == ["get_weather", "get_weather"]
    assert [c["args"] for c in first.function_calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c["id"].startswith("call_") for c in first.function_calls)
    assert first.turn["parts"][0]["thoughtSignature"] == "c2lnMQ=="
    declared = fake.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert declared["parameters"]["type"] == "OBJECT"
    assert declared["parameters"]["properties"]["city"]["type"] == "STRING"
    assert fake.requests[1].body["contents"][1] == first.turn
    assert second.text == "Paris is sunny, Rome is rainy."
    assert lost.kind is ErrorKind.INVALID_REQUEST and "thought_signature" in lost.message
    assert len(fake.requests) == 3, "a 400 is never retried"


def test_json_output_with_schema(gemini) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(text_reply('{"n": 3}'))
        answer = await provider.generate(ModelRequest(
            contents=[HELLO.contents[0]], options=GenerationOptions(response_schema=schema)))
        return fake.requests[0].body["generationConfig"], answer

    config, answer = gemini(scenario)
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert answer.text == '{"n": 3}'


def test_count_tokens(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        return await provider.count_tokens(ModelRequest(contents=[user("x" * 40)]))

    assert gemini(scenario) == 10


# --- errors --------------------------------------------------------------------------------

def _failure(gemini, *replies: Reply, stream: bool = False, **config: Any) -> tuple[LLMError, int]:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(*replies)

        async def sink(delta: dict) -> None:
            pass

        with pytest.raises(LLMError) as caught:
            await provider.generate(HELLO, on_chunk=sink if stream else None)
        return caught.value, len(fake.requests)

    return gemini(scenario, **config)


@pytest.mark.parametrize("status,kind", [(400, ErrorKind.INVALID_REQUEST), (401, ErrorKind.AUTH),
                                         (403, ErrorKind.AUTH), (404, ErrorKind.INVALID_REQUEST)])
def test_client_errors_are_never_retried(gemini, status: int, kind: ErrorKind) -> None:
    error, attempts = _failure(gemini, error_reply(status, "nope"))
    assert error.kind is kind
    assert error.status == status
    assert attempts == 1


def test_wrong_key_is_an_auth_error_naming_the_variable(gemini) -> None:
    error, attempts = _failure(gemini, api_key="wrong")
    assert error.kind is ErrorKind.AUTH and error.reason == "API_KEY_INVALID"
    assert "GEMINI_API_KEY" in error.message and attempts == 1


def test_missing_key_fails_before_any_request(gemini) -> None:
    error, attempts = _failure(gemini, api_key=None)
    assert error.kind is ErrorKind.NOT_CONFIGURED and "GEMINI_API_KEY" in error.message
    assert attempts == 0


def test_429_retry_honours_the_server_delay(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(error_reply(429, retry_delay=0.3), text_reply("finally"))
        answer = await provider.generate(HELLO)
        return answer, [r.at for r in fake.requests]

    answer, arrivals = gemini(scenario)
    assert answer.text == "finally"
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.3, "the retry came before the server's retryDelay"


def test_429_that_persists_reports_rate_limited_with_retry_after(gemini) -> None:
    error, attempts = _failure(gemini, *[error_reply(429, retry_delay=0.02)] * 3)
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after == pytest.approx(0.02)
    assert attempts == 3  # FAST_RETRY.max_attempts


def test_server_delay_beyond_the_wait_cap_is_not_waited_for(gemini) -> None:
    error, attempts = _failure(gemini, error_reply(429, retry_delay=60))
    assert error.kind is ErrorKind.RATE_LIMITED and error.retry_after == 60
    assert attempts == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_then_succeed(gemini, status: int) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(error_reply(status), text_reply("ok"))
        return (await provider.generate(HELLO)).text, len(fake.requests)

    assert gemini(scenario) == ("ok", 2)


def test_overload_that_persists_is_unavailable(gemini) -> None:
    error, attempts = _failure(gemini, *[error_reply(503)] * 3)
    assert error.kind is ErrorKind.UNAVAILABLE and "overloaded" in error.message
    assert attempts == 3


@pytest.mark.parametrize("status", [408, 504])
def test_gateway_timeouts_are_timeout_errors(gemini, status: int) -> None:
    error, attempts = _failure(gemini, *[error_reply(status)] * 3)
    assert error.kind is ErrorKind.TIMEOUT and attempts == 3


def test_slow_answer_times_out_then_retries(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(text="late", delay=30), text_reply("on time"))
        return (await provider.generate(HELLO)).text, len(fake.requests)

    assert gemini(scenario, timeout=1.0) == ("on time", 2)


def test_stalled_stream_times_out(gemini) -> None:
    error, attempts = _failure(gemini, Reply(text="abcdef", chunks=3, stall_after=1), stream=True,
                               stream_idle_timeout=1.0)
    assert error.kind is ErrorKind.TIMEOUT and "stalled" in error.message
    assert attempts == 1, "a stream that already delivered text is not retried"


def test_truncated_stream_before_any_text_is_retried(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(text="abc", truncate_after=0), text_reply("whole"))
        chunks: list[dict] = []

        async def sink(delta: dict) -> None:
            chunks.append(delta)

        answer = await provider.generate(HELLO, on_chunk=sink)
        return answer.text, chunks, len(fake.requests)

    text, chunks, attempts = gemini(scenario)
    assert text == "whole" and "".join(c["text"] for c in chunks) == "whole" and attempts == 2


def test_truncated_stream_after_text_is_an_error(gemini) -> None:
    error, attempts = _failure(gemini, Reply(text="abcdef", chunks=3, truncate_after=2), stream=True)
    assert error.kind is ErrorKind.UNAVAILABLE and "finishReason" in error.message
    assert attempts == 1


def test_mid_stream_error_event(gemini) -> None:
    error, _ = _failure(gemini, Reply(text="abcdef", chunks=3, error_after=1), stream=True)
    assert error.kind is ErrorKind.UNAVAILABLE and error.status == 500


def test_malformed_json_is_unavailable_and_retried(gemini) -> None:
    error, attempts = _failure(gemini, *[Reply(malformed=True)] * 3)
    assert error.kind is ErrorKind.UNAVAILABLE and "malformed" in error.message
    assert attempts == 3


def test_connection_refused_is_unavailable(gemini) -> None:
    error, attempts = _failure(gemini, base_url="http://127.0.0.1:9")
    assert error.kind is ErrorKind.UNAVAILABLE and attempts == 0


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_prompt_is_a_safety_answer(gemini, stream: bool) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(block_reason="PROHIBITED_CONTENT"))

        async def sink(delta: dict) -> None:
            pass

        return await provider.generate(HELLO, sink if stream else None), len(fake.requests)

    answer, attempts = gemini(scenario)
    assert answer.finish_reason == "safety" and answer.text == "" and attempts == 1
    assert answer.safety == {"blocked": True, "source": "prompt", "reason": "PROHIBITED_CONTENT"}


def test_safety_stop_is_a_safety_answer(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(text="", finish_reason="SAFETY"))
        return await provider.generate(HELLO)

    answer = gemini(scenario)
    assert answer.finish_reason == "safety"
    assert {k: answer.safety[k] for k in ("blocked", "source", "reason")} == {
        "blocked": True, "source": "answer", "reason": "SAFETY"}
    assert [r["category"] for r in answer.safety["ratings"] if r.get("blocked")] == [
        "HARM_CATEGORY_DANGEROUS_CONTENT"]


def test_max_tokens_with_no_parts_is_an_empty_answer(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        fake.script(Reply(text="", finish_reason="MAX_TOKENS", thoughts_tokens=50))
        return await provider.generate(HELLO)

    answer = gemini(scenario)
    assert answer.text == "" and answer.finish_reason == "max_tokens"
    assert answer.usage.thoughts == 50 and answer.usage.output == 50
    assert answer.turn == {"role": "model", "parts": []}
