"""FakeOpenAI driven by the official ``openai`` client (sync and async): every route it serves,
what the client sends is accepted, and what the fake answers is parsed to the values the
fake's token rule and vectors promise.

DRIVEN names, for each route, the test that drives it; an autouse check makes sure
that test reached the route, and ``test_every_route_is_driven`` fails on a route
added without one.
"""
from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionToolUnionParam

from agentos.testing import FakeOpenAI, Reply, call_reply, count_tokens, text_reply

KEY = "sk-fake"
DRIVEN: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): "test_chat_tool_loop",
    ("POST", "/v1/embeddings"): "test_embeddings",
    ("GET", "/v1/models"): "test_models",
    ("GET", "/v1/models/{model}"): "test_models",
    ("*", "/{tail}"): "test_an_unserved_path_is_a_404",
}
WEATHER: list[ChatCompletionToolUnionParam] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}}]


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    with server.running_in_thread():
        yield server
    reached = {("*" if r.route == "/{tail}" else r.method, r.route) for r in server.requests}
    claimed = {route for route, test in DRIVEN.items() if test == request.node.originalname}
    assert claimed <= reached, f"{request.node.name} is listed for routes it never reached: {claimed - reached}"


def client_for(fake: FakeOpenAI, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=KEY, **{"max_retries": 0, **options})


def async_client_for(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)


# --- chat completions ----------------------------------------------------------------------------

def test_chat_tool_loop(fake: FakeOpenAI) -> None:
    fake.script(call_reply(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})))
    client = client_for(fake)
    messages: list[Any] = [{"role": "user", "content": "Weather?"}]
    first = client.chat.completions.create(model="gpt-test", messages=messages, tools=WEATHER)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    messages.append(choice.message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in calls]
    second = client.chat.completions.create(model="gpt-test", messages=messages, tools=WEATHER)
    assert second.choices[0].message.content == "Function results: sunny"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    usage = second.usage
    assert usage is not None
    prompt = count_tokens("Weather?" + "".join(m.get("content") or "" for m in messages[1:]))
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, count_tokens("Function results: sunny"))


def test_chat_stream_with_usage_sync_and_async(fake: FakeOpenAI) -> None:
    text = "Streamed in pieces."
    fake.script(text_reply(text, chunks=3, thoughts="mull it over"), text_reply(text, chunks=3))
    client = client_for(fake)
    chunks = list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning = count_tokens("mull it over")
    assert usage.completion_tokens_details.reasoning_tokens == reasoning
    assert usage.completion_tokens == count_tokens(text) + reasoning
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    async def stream() -> str:
        async with async_client_for(fake) as client:
            answer = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Hi"}], stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])

    assert asyncio.run(stream()) == text
    assert "stream_options" not in fake.requests[-1].body


def test_chat_tool_call_stream_fragments(fake: FakeOpenAI) -> None:
    fake.script(call_reply(("get_weather", {"city": "Paris"}), text="Checking."))
    client = client_for(fake)
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "W?"}],
                                                tools=WEATHER, stream=True):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
            if call.function and call.function.name:
                names[call.index] = call.function.name
    assert names == {0: "get_weather"} and json.loads(arguments[0]) == {"city": "Paris"}


def test_chat_choices_and_stop(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    fake.script(Reply(text="One. STOP here", alternatives=["Two.", "Three! STOP"]))
    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}],
                                            n=3, stop=["STOP", "!"])
    assert [(c.index, c.message.content, c.finish_reason) for c in answer.choices] == [
        (0, "One. ", "stop"), (1, "Two.", "stop"), (2, "Three", "stop")]
    assert answer.usage is not None
    assert answer.usage.completion_tokens == sum(count_tokens(t) for t in ("One. ", "Two.", "Three"))

    fake.script(Reply(text="abcdef", alternatives=["ghijkl"], chunks=2))
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}],
                                                n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "abcdef", 1: "ghijkl"}

    for options, param in (({"n": 0}, "n"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}],
                                           **options)
        assert caught.value.param == param


def test_automatic_prompt_caching_reports_cached_tokens(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    system = "A long shared system prompt. " * 200  # 5,800 characters: 1,450 tokens
    usages = [client.chat.completions.create(model="gpt-test", messages=[
        {"role": "system", "content": system}, {"role": "user", "content": question}]).usage
        for question in ("First?", "Second?")]
    first, second = (u.prompt_tokens_details.cached_tokens for u in usages)  # type: ignore[union-attr]
    assert first == 0
    assert second == 1024 + (len(system) // 4 - 1024) // 128 * 128  # the shared prefix, in 128-token steps


def test_rate_limit_surfaces_with_retry_after(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, retry_delay=7))
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(fake).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "7"
    # the client's own retry honours the header and then gets the answer
    fake.script(Reply(status=429, retry_delay=0.01), text_reply("after the pause"))
    answer = client_for(fake, max_retries=1).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "after the pause"


def test_wrong_key_is_an_authentication_error(fake: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0).models.list()


# --- embeddings ----------------------------------------------------------------------------------

def test_embeddings(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    # the client asks for base64 by default and decodes it to floats
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert fake.requests[-1].body["encoding_format"] == "base64"
    assert [d.index for d in default.data] == [0, 1]
    alpha = default.data[0].embedding
    assert len(alpha) == 1536 and math.isclose(sum(v * v for v in alpha), 1.0, rel_tol=1e-5)
    floats = client.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(alpha, abs=1e-7), "float32 over base64, same vector"
    assert default.usage.prompt_tokens == count_tokens("alpha") + count_tokens("beta")

    short = client.embeddings.create(model="text-embedding-3-large", input="alpha", dimensions=256)
    vector = short.data[0].embedding
    assert len(vector) == 256 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)

    async def again() -> list[float]:
        async with async_client_for(fake) as client:
            answer = await client.embeddings.create(model="text-embedding-3-large", input="alpha", dimensions=256)
            return answer.data[0].embedding

    assert asyncio.run(again()) == vector, "deterministic"
    raw = fake.requests[-1].body
    assert (raw["input"], raw["dimensions"]) == ("alpha", 256)
    packed = base64.b64decode(client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="alpha").http_response.json()["data"][0]["embedding"])
    assert len(packed) == 1536 * 4, "base64 holds little-endian float32s"

    invalid: list[tuple[dict[str, Any], str]] = [
        ({"input": ""}, "input"), ({"input": ["x"] * 2049}, "input"),
        ({"input": "x", "dimensions": 4000}, "dimensions"),
        ({"input": "x", "model": "text-embedding-ada-002", "dimensions": 8}, "dimensions")]
    for options, param in invalid:
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(**{"model": "text-embedding-3-large", **options})
        assert caught.value.param == param


# --- models --------------------------------------------------------------------------------------

def test_models(fake: FakeOpenAI) -> None:
    fake.set_models(["gpt-test", {"id": "org/local-model", "owned_by": "llama.cpp"}])
    client = client_for(fake)
    assert [(m.id, m.owned_by) for m in client.models.list()] == [("gpt-test", "system"),
                                                                  ("org/local-model", "llama.cpp")]
    assert client.models.retrieve("org/local-model").owned_by == "llama.cpp"

    async def listed() -> list[str]:
        async with async_client_for(fake) as client:
            return [m.id async for m in client.models.list()]

    assert asyncio.run(listed()) == ["gpt-test", "org/local-model"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-unknown")
    assert caught.value.code == "model_not_found"


def test_an_unserved_path_is_a_404(fake: FakeOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client_for(fake).files.list()


# --- the route inventory -------------------------------------------------------------------------

def test_every_route_is_driven() -> None:
    app = web.Application()
    FakeOpenAI().routes(app)
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and not route.resource.canonical.startswith("/_fake/")}
    assert served == set(DRIVEN), "every route the fake serves needs an official-client test in DRIVEN"
    missing = {test for test in DRIVEN.values() if test not in globals()}
    assert not missing, f"DRIVEN names tests that do not exist: {missing}"
