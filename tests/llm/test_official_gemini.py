"""FakeGemini driven by the official ``google-genai`` client: what the client sends, the fake accepts
and answers as the real API does, and what the fake answers, the client parses.

DRIVEN names, for each route the fake serves, the test that drives it with the
official client; an autouse check makes sure that test really reached the route,
and ``test_every_route_is_driven`` fails when a route is added without one.
"""
from __future__ import annotations

import asyncio
import base64
import json
import math
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from aiohttp import web
from google import genai
from google.genai import errors, types
from google.genai.client import AsyncClient

from agentos.testing import FakeGemini, Reply, blocked_reply, call_reply, prompt_tokens, text_reply
from agentos.testing._gemini_wire import ACTION_METHODS, EMBEDDING_SIZE
from agentos.testing._server import RecordedRequest

# The arg-type ignores carry unused-ignore: google-genai's content types take numpy arrays where
# numpy is installed (the bench extra brings it), and these calls type-check only then.
T = TypeVar("T")
MODEL_ACTION = "/{version}/models/{model_action}"
DRIVEN: dict[tuple[str, str], str] = {
    ("POST", "/{version}/models/{model}:generateContent"): "test_tool_loop_with_signatures",
    ("POST", "/{version}/models/{model}:streamGenerateContent"): "test_stream_sync_and_async",
    ("POST", "/{version}/models/{model}:countTokens"): "test_count_tokens_agrees_with_usage",
    ("POST", "/{version}/models/{model}:embedContent"): "test_embed_content",
    ("POST", "/{version}/models/{model}:batchEmbedContents"): "test_batch_embeddings",
    ("GET", "/{version}/models"): "test_models_list_walks_every_page",
    ("GET", "/{version}/models/{model}"): "test_get_model",
    ("POST", "/{version}/cachedContents"): "test_cache_lifecycle",
    ("GET", "/{version}/cachedContents"): "test_cache_lifecycle",
    ("GET", "/{version}/cachedContents/{cache}"): "test_cache_lifecycle",
    ("PATCH", "/{version}/cachedContents/{cache}"): "test_cache_lifecycle",
    ("DELETE", "/{version}/cachedContents/{cache}"): "test_cache_lifecycle",
    ("*", "/{tail}"): "test_an_unserved_path_is_a_google_404",
}

# Bytes whose standard base64 uses '+' and '/', so a URL-safe re-encoding differs in text.
SIGNATURE = base64.b64encode(b"\xfb\xef\xbe-signature-\xff\xfe").decode()
WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather in a city",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]))])
LONG = "The shared prefix of a team of agents. " * 120  # ~4,700 characters: over 1,024 tokens


def route_key(recorded: RecordedRequest) -> tuple[str, str]:
    if recorded.route == MODEL_ACTION:
        return recorded.method, "/{version}/models/{model}:" + recorded.path.rpartition(":")[2]
    if recorded.route == "/{tail}":
        return "*", recorded.route
    return recorded.method, recorded.route


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeGemini]:
    server = FakeGemini()
    with server.running_in_thread():
        yield server
    reached = {route_key(r) for r in server.requests}
    claimed = {route for route, test in DRIVEN.items() if test == request.node.originalname}
    assert claimed <= reached, f"{request.node.name} is listed for routes it never reached: {claimed - reached}"


def _json(response: types.HttpResponse) -> Any:
    """A raw API response's JSON body (which the SDK types as optional)."""
    assert response.body is not None
    return json.loads(response.body)


def client_for(fake: FakeGemini) -> genai.Client:
    return genai.Client(api_key=fake.api_key, http_options=types.HttpOptions(base_url=fake.url))


def on_aio(fake: FakeGemini, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``work`` with the async client in a fresh loop, closing its session before the loop ends."""
    async def main() -> T:
        async with client_for(fake).aio as aio:
            return await work(aio)
    return asyncio.run(main())


def user(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


# --- generateContent / streamGenerateContent -----------------------------------------------------

def test_tool_loop_with_signatures(fake: FakeGemini) -> None:
    """The SDK re-encodes a signature URL-safe; strict mode compares the bytes and accepts it."""
    assert "+" in SIGNATURE or "/" in SIGNATURE
    fake.script(call_reply(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
                           thought_signature=SIGNATURE))
    client = client_for(fake)
    config = types.GenerateContentConfig(tools=[WEATHER])
    history = [user("Weather?")]
    first = client.models.generate_content(model="gemini-test", contents=history, config=config)
    calls = first.function_calls or []
    assert [c.args for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c.id for c in calls)
    model_turn = first.candidates[0].content  # type: ignore[index]
    assert model_turn is not None and model_turn.parts is not None
    assert model_turn.parts[0].thought_signature == base64.b64decode(SIGNATURE)
    history += [model_turn, types.Content(role="user", parts=[
        types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name, response={"result": "sunny"}))
        for c in calls])]
    second = client.models.generate_content(model="gemini-test", contents=history, config=config)
    assert second.text == 'Function results: [{"result":"sunny"},{"result":"sunny"}]'
    replayed = fake.requests[-1].body["contents"][1]["parts"][0]["thoughtSignature"]
    assert replayed != SIGNATURE, "the SDK is expected to re-encode the signature"


def test_a_changed_signature_is_still_refused(fake: FakeGemini) -> None:
    fake.script(call_reply(("get_weather", {"city": "Paris"}), thought_signature=SIGNATURE))
    client = client_for(fake)
    config = types.GenerateContentConfig(tools=[WEATHER])
    history = [user("Weather?")]
    first = client.models.generate_content(model="gemini-test", contents=history, config=config)
    turn = first.candidates[0].content  # type: ignore[index]
    assert turn is not None and turn.parts is not None and turn.parts[0].function_call is not None
    turn.parts[0].thought_signature = b"another"
    call = turn.parts[0].function_call
    history += [turn, types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=call.id, name=call.name, response={"result": "sunny"}))])]
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents=history, config=config)
    assert caught.value.code == 400
    assert "thought_signature" in (caught.value.message or "")


def test_stream_sync_and_async(fake: FakeGemini) -> None:
    text = "Streaming answers arrive in pieces."
    fake.script(text_reply(text, chunks=4, thought_signature="c2lnLWVuZA=="), text_reply(text, chunks=4))
    client = client_for(fake)
    chunks = list(client.models.generate_content_stream(model="gemini-test", contents="Hi"))
    assert len(chunks) == 5  # four pieces and the signature's empty part
    assert "".join(c.text or "" for c in chunks) == text
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.candidates[0].content and last.candidates[0].content.parts
    assert last.candidates[0].content.parts[-1].thought_signature == b"sig-end"
    assert last.usage_metadata and last.usage_metadata.candidates_token_count == math.ceil(len(text) / 4)

    async def stream(aio: AsyncClient) -> list[types.GenerateContentResponse]:
        answer = await aio.models.generate_content_stream(model="gemini-test", contents="Hi")
        return [chunk async for chunk in answer]

    async_chunks = on_aio(fake, stream)
    assert "".join(c.text or "" for c in async_chunks) == text
    assert all(r.query == {"alt": "sse"} for r in fake.requests)


# --- countTokens ---------------------------------------------------------------------------------

def test_count_tokens_agrees_with_usage(fake: FakeGemini) -> None:
    client = client_for(fake)
    contents = [user("How many tokens is this question?"), types.Content(role="model", parts=[
        types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Oslo"}))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            name="get_weather", response={"result": "snow"}))])]
    counted = client.models.count_tokens(model="gemini-test", contents=contents)
    answer = client.models.generate_content(model="gemini-test", contents=contents)
    assert answer.usage_metadata is not None
    assert counted.total_tokens == answer.usage_metadata.prompt_token_count == prompt_tokens(
        fake.requests[-1].body)
    assert on_aio(fake, lambda aio: aio.models.count_tokens(model="gemini-test", contents=contents)
                  ).total_tokens == counted.total_tokens

    # The SDK sends only `contents` to the Gemini API; the generateContentRequest form (system
    # instruction and tools counted too) goes through its own HTTP layer.
    config = types.GenerateContentConfig(system_instruction="Answer in French.", tools=[WEATHER])
    answer = client.models.generate_content(model="gemini-test", contents="Bonjour?", config=config)
    request = dict(fake.requests[-1].body)
    request.pop("generationConfig", None)
    raw = client._api_client.request("post", "models/gemini-test:countTokens",
                                     {"generateContentRequest": {"model": "models/gemini-test", **request}})
    total = _json(raw)["totalTokens"]
    assert answer.usage_metadata is not None and total == answer.usage_metadata.prompt_token_count
    assert total > prompt_tokens({"contents": request["contents"]}), "system instruction and tools count"


# --- embeddings ----------------------------------------------------------------------------------

def test_batch_embeddings(fake: FakeGemini) -> None:
    client = client_for(fake)
    model = "gemini-embedding-001"
    # The SDK takes a list of strings; its stubs spell that as lists of unions, which mypy does
    # not match a list literal against.
    full = client.models.embed_content(model=model, contents=["alpha", "beta"])  # type: ignore[arg-type, unused-ignore]
    assert full.embeddings is not None and len(full.embeddings) == 2
    alpha = full.embeddings[0].values or []
    assert len(alpha) == EMBEDDING_SIZE
    assert math.isclose(sum(v * v for v in alpha), 1.0, rel_tol=1e-5)
    cut = client.models.embed_content(model=model, contents=["alpha", "beta"],  # type: ignore[arg-type, unused-ignore]
                                      config=types.EmbedContentConfig(output_dimensionality=64))
    assert cut.embeddings is not None and (cut.embeddings[0].values or []) == alpha[:64], "a prefix (MRL)"
    again = on_aio(fake, lambda aio: aio.models.embed_content(
        model=model, contents="alpha", config=types.EmbedContentConfig(output_dimensionality=64)))
    assert again.embeddings is not None and again.embeddings[0].values == alpha[:64], "deterministic"
    query = client.models.embed_content(model=model, contents="alpha", config=types.EmbedContentConfig(
        output_dimensionality=64, task_type="RETRIEVAL_QUERY"))
    assert query.embeddings is not None and query.embeddings[0].values != alpha[:64], "the task shapes it"
    sent = fake.requests[-1].body["requests"]
    assert sent == [{"content": {"parts": [{"text": "alpha"}], "role": "user"}, "taskType": "RETRIEVAL_QUERY",
                     "outputDimensionality": 64, "model": f"models/{model}"}]

    for contents, config, message in (
            ([""], None, "required oneof field 'data'"),
            ([f"text {i}" for i in range(101)], None, "at most 100 requests"),
            (["x"], types.EmbedContentConfig(output_dimensionality=EMBEDDING_SIZE + 1), "output_dimensionality")):
        with pytest.raises(errors.ClientError) as caught:
            client.models.embed_content(model=model, contents=contents, config=config)  # type: ignore[arg-type, unused-ignore]
        assert caught.value.code == 400 and message in (caught.value.message or "")
    with pytest.raises(errors.ClientError) as caught:
        client.models.embed_content(model="gemini-test", contents="x")
    assert caught.value.code == 404 and "not supported for batchEmbedContents" in (caught.value.message or "")


def test_embed_content(fake: FakeGemini) -> None:
    """google-genai batches even one text for the Gemini API, so embedContent goes through its HTTP layer."""
    client = client_for(fake)
    body = {"content": {"parts": [{"text": "alpha"}]}, "taskType": "SEMANTIC_SIMILARITY",
            "outputDimensionality": 16}
    raw = client._api_client.request("post", "models/gemini-embedding-001:embedContent", body)
    single = types.EmbedContentResponse.model_validate({"embeddings": [_json(raw)["embedding"]]})
    batched = client.models.embed_content(model="gemini-embedding-001", contents="alpha",
                                          config=types.EmbedContentConfig(output_dimensionality=16,
                                                                          task_type="SEMANTIC_SIMILARITY"))
    assert single.embeddings is not None and batched.embeddings is not None
    assert single.embeddings[0].values == batched.embeddings[0].values
    assert len(single.embeddings[0].values or []) == 16
    with pytest.raises(errors.ClientError) as caught:
        client._api_client.request("post", "models/gemini-embedding-001:embedContent",
                                   {"content": {"parts": [{"text": "x"}]}, "taskType": "GUESSING"})
    assert caught.value.code == 400 and "TaskType" in (caught.value.message or "")


# --- models --------------------------------------------------------------------------------------

def test_models_list_walks_every_page(fake: FakeGemini) -> None:
    names = [f"gemini-fake-{i}" for i in range(7)] + ["gemini-embedding-001"]
    fake.set_models(names)
    client = client_for(fake)
    listed = list(client.models.list(config={"page_size": 3}))
    assert [m.name for m in listed] == [f"models/{n}" for n in names]
    pages = [r for r in fake.requests if r.method == "GET"]
    assert len(pages) == 3 and "pageToken" not in pages[0].query and pages[2].query["pageToken"]

    async def walk(aio: AsyncClient) -> list[str]:
        return [m.name or "" async for m in await aio.models.list(config={"page_size": 5})]

    assert on_aio(fake, walk) == [f"models/{n}" for n in names]
    embedding = listed[-1]
    assert embedding.supported_actions == ["embedContent", "countTextTokens", "countTokens",
                                           "asyncBatchEmbedContent"]
    assert embedding.output_token_limit == 1


def test_get_model(fake: FakeGemini) -> None:
    fake.set_models(["gemini-test", {"name": "models/gemini-small", "inputTokenLimit": 8192,
                                     "displayName": "Gemini Small"}])
    client = client_for(fake)
    small = client.models.get(model="gemini-small")
    assert (small.name, small.display_name, small.input_token_limit, small.output_token_limit) == (
        "models/gemini-small", "Gemini Small", 8192, 65536)
    assert "generateContent" in (small.supported_actions or [])
    assert on_aio(fake, lambda aio: aio.models.get(model="models/gemini-test")).name == "models/gemini-test"
    with pytest.raises(errors.ClientError) as caught:
        client.models.get(model="gemini-unknown")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


# --- cachedContents ------------------------------------------------------------------------------

def test_cache_lifecycle(fake: FakeGemini) -> None:
    client = client_for(fake)
    with pytest.raises(errors.ClientError) as caught:
        client.caches.create(model="gemini-test", config=types.CreateCachedContentConfig(contents=["short"]))  # type: ignore[arg-type, unused-ignore]
    assert caught.value.code == 400
    assert caught.value.message == "Cached content is too small. total_token_count=2, min_total_token_count=1024"

    cache = client.caches.create(model="gemini-test", config=types.CreateCachedContentConfig(
        contents=[LONG], system_instruction="You are one of a team.", tools=[WEATHER], ttl="300s",  # type: ignore[arg-type, unused-ignore]
        display_name="team prefix"))
    cached_tokens = prompt_tokens({"contents": [{"parts": [{"text": LONG}]}],
                                   "systemInstruction": {"parts": [{"text": "You are one of a team."}]},
                                   "tools": fake.requests[-1].body["tools"]})
    assert cache.name and cache.name.startswith("cachedContents/")
    assert cache.model == "models/gemini-test" and cache.display_name == "team prefix"
    assert cache.usage_metadata and cache.usage_metadata.total_token_count == cached_tokens
    assert cache.expire_time and cache.create_time
    assert (cache.expire_time - cache.create_time).total_seconds() == pytest.approx(300, abs=1)

    # generation on the cache: its tools apply (the default answer calls the cached function)
    answer = client.models.generate_content(model="gemini-test", contents="Weather in Oslo?",
                                            config=types.GenerateContentConfig(cached_content=cache.name))
    assert answer.function_calls and answer.function_calls[0].name == "get_weather"
    usage = answer.usage_metadata
    assert usage is not None and usage.cached_content_token_count == cached_tokens
    assert usage.prompt_token_count == cached_tokens + prompt_tokens({"contents": [
        {"parts": [{"text": "Weather in Oslo?"}]}]})
    raw = client._api_client.request("post", "models/gemini-test:countTokens", {"generateContentRequest": {
        "model": "models/gemini-test", "contents": [{"role": "user", "parts": [{"text": "Weather in Oslo?"}]}],
        "cachedContent": cache.name}})
    counted = _json(raw)
    assert (counted["totalTokens"], counted["cachedContentTokenCount"]) == (usage.prompt_token_count, cached_tokens)

    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi", config=types.GenerateContentConfig(
            cached_content=cache.name, system_instruction="Also this."))
    assert caught.value.code == 400 and "CachedContent can not be used" in (caught.value.message or "")

    assert client.caches.get(name=cache.name).display_name == "team prefix"
    second = on_aio(fake, lambda aio: aio.caches.create(model="gemini-test", config=types.CreateCachedContentConfig(
        contents=[LONG + "more"], ttl="60s")))  # type: ignore[arg-type, unused-ignore]
    assert [c.name for c in client.caches.list(config={"page_size": 1})] == [cache.name, second.name]
    extended = client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert extended.expire_time and extended.update_time
    assert (extended.expire_time - extended.update_time).total_seconds() == pytest.approx(7200, abs=1)

    fake.advance(3600)  # past the second cache's 60 s, within the first's 7200 s
    assert [c.name for c in client.caches.list()] == [cache.name]
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi",
                                       config=types.GenerateContentConfig(cached_content=second.name))
    assert (caught.value.code, caught.value.message) == (403, "CachedContent not found (or permission denied)")

    client.caches.delete(name=cache.name)
    assert list(client.caches.list()) == []
    for gone in (lambda: client.caches.get(name=cache.name), lambda: client.caches.delete(name=cache.name)):
        with pytest.raises(errors.ClientError) as caught:
            gone()
        assert caught.value.code == 403 and caught.value.status == "PERMISSION_DENIED"


# --- generation options, safety, thoughts ----------------------------------------------------------

def test_max_output_tokens_bounds_thinking_and_text(fake: FakeGemini) -> None:
    client = client_for(fake)
    fake.script(Reply(text="x" * 100, thoughts_tokens=6), Reply(text="y" * 100, thoughts_tokens=30))
    config = types.GenerateContentConfig(max_output_tokens=10)
    cut = client.models.generate_content(model="gemini-test", contents="Hi", config=config)
    thought_out = client.models.generate_content(model="gemini-test", contents="Hi", config=config)
    assert cut.text == "x" * 16 and cut.candidates and cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert cut.usage_metadata and (cut.usage_metadata.thoughts_token_count,
                                   cut.usage_metadata.candidates_token_count) == (6, 4)
    # Thinking that takes the whole allowance leaves an empty answer, as Gemini 2.5's does.
    assert thought_out.text is None and thought_out.usage_metadata
    assert thought_out.usage_metadata.thoughts_token_count == 10
    assert thought_out.candidates and thought_out.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_candidates_and_stop_sequences(fake: FakeGemini) -> None:
    client = client_for(fake)
    fake.script(Reply(text="First answer. END and more", alternatives=["Second answer.", "Third END x"]))
    answer = client.models.generate_content(model="gemini-test", contents="Hi", config=types.GenerateContentConfig(
        candidate_count=3, stop_sequences=["END"]))
    assert answer.candidates is not None
    got = [(c.index, "".join(p.text or "" for p in (c.content.parts or [])) if c.content else None,
            c.finish_reason) for c in answer.candidates]
    assert got == [(0, "First answer. ", types.FinishReason.STOP), (1, "Second answer.", types.FinishReason.STOP),
                   (2, "Third ", types.FinishReason.STOP)]
    assert answer.usage_metadata is not None
    assert answer.usage_metadata.candidates_token_count == sum(
        math.ceil(len(t) / 4) for t in ("First answer. ", "Second answer.", "Third "))

    fake.script(Reply(text="abcdefgh", alternatives=["ijklmnop"], chunks=2))
    chunks = list(client.models.generate_content_stream(
        model="gemini-test", contents="Hi", config=types.GenerateContentConfig(candidate_count=2)))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for candidate in chunk.candidates or []:
            parts = candidate.content.parts if candidate.content else None
            texts[candidate.index or 0] = texts.get(candidate.index or 0, "") + "".join(
                p.text or "" for p in parts or [])
    assert texts == {0: "abcdefgh", 1: "ijklmnop"}

    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi",
                                       config=types.GenerateContentConfig(candidate_count=9))
    assert caught.value.code == 400 and "candidate_count" in (caught.value.message or "")


def test_safety_settings_and_blocks(fake: FakeGemini) -> None:
    client = client_for(fake)
    allowed = [types.SafetySetting(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                   threshold=types.HarmBlockThreshold.BLOCK_NONE)]
    assert client.models.generate_content(model="gemini-test", contents="Hi", config=types.GenerateContentConfig(
        safety_settings=allowed)).text == "echo: Hi"
    vertex_only = [types.SafetySetting(category=types.HarmCategory.HARM_CATEGORY_IMAGE_HATE,
                                       threshold=types.HarmBlockThreshold.BLOCK_NONE)]
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi", config=types.GenerateContentConfig(
            safety_settings=vertex_only))
    assert caught.value.code == 400
    assert "Invalid value at 'safety_settings[0].category'" in (caught.value.message or "")
    with pytest.warns(UserWarning), pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi", config=types.GenerateContentConfig(
            # A threshold the API does not have: the SDK warns, the fake refuses it.
            safety_settings=[types.SafetySetting(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                                 threshold="BLOCK_SOME")]))  # type: ignore[arg-type]
    assert "safety_settings[0].threshold" in (caught.value.message or "")

    fake.script(blocked_reply("HARM_CATEGORY_HARASSMENT", text="Well, "))
    answer = client.models.generate_content(model="gemini-test", contents="Hi")
    assert answer.candidates is not None
    candidate = answer.candidates[0]
    assert candidate.finish_reason == types.FinishReason.SAFETY and answer.text == "Well, "
    flagged = [r.category for r in candidate.safety_ratings or [] if r.blocked]
    assert flagged == [types.HarmCategory.HARM_CATEGORY_HARASSMENT]

    fake.script(blocked_reply(prompt=True))
    refused = client.models.generate_content(model="gemini-test", contents="Hi")
    assert refused.candidates is None and refused.text is None
    assert refused.prompt_feedback and refused.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_thoughts_are_parts_and_counted(fake: FakeGemini) -> None:
    client = client_for(fake)
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    fake.script(Reply(text="42", thoughts="Six times seven."))
    answer = client.models.generate_content(model="gemini-test", contents="6*7?", config=config)
    assert answer.text == "42"
    parts = answer.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert [(p.text, p.thought) for p in parts or []] == [("Six times seven.", True), ("42", None)]
    usage = answer.usage_metadata
    assert usage is not None and usage.thoughts_token_count == math.ceil(len("Six times seven.") / 4)
    assert usage.total_token_count == (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) \
        + usage.thoughts_token_count
    fake.script(Reply(text="42", thoughts="Six times seven."))
    hidden = client.models.generate_content(model="gemini-test", contents="6*7?")
    assert [p.thought for p in hidden.candidates[0].content.parts or []] == [None]  # type: ignore[index,union-attr]


# --- errors --------------------------------------------------------------------------------------

def test_rate_limit_surfaces_with_its_delay(fake: FakeGemini) -> None:
    client = client_for(fake)
    fake.script(Reply(status=429, retry_delay=7), Reply(status=429, retry_delay=1.5))
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents="Hi")
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert _retry_delay(caught.value.details) == "7s"

    with pytest.raises(errors.ClientError) as caught:
        on_aio(fake, lambda aio: aio.models.generate_content(model="gemini-test", contents="Hi"))
    assert caught.value.code == 429 and _retry_delay(caught.value.details) == "1.5s"


def _retry_delay(details: Any) -> str:
    (retry,) = [d for d in details["error"]["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    return str(retry["retryDelay"])


def test_an_unserved_path_is_a_google_404(fake: FakeGemini) -> None:
    client = client_for(fake)  # held: a Client closes its transport when it is collected
    with pytest.raises(errors.ClientError) as caught:
        list(client.files.list())
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


# --- every kind of scripted answer ---------------------------------------------------------------

ANSWER_KINDS: dict[str, tuple[Reply, dict[str, Any]]] = {
    "text": (text_reply("hello world"), {"text": "hello world", "finish": "STOP"}),
    "empty": (text_reply(""), {"text": None, "finish": "STOP"}),
    "max tokens while thinking": (Reply(finish_reason="MAX_TOKENS", thoughts_tokens=50),
                                  {"text": None, "finish": "MAX_TOKENS", "thoughts": 50}),
    "one call": (call_reply(("f", {"a": 1})), {"calls": [("f", {"a": 1})], "finish": "STOP"}),
    "text then parallel calls": (call_reply(("f", {}), ("g", {"x": [1]}), text="pre", thought_signature="c2ln"),
                                 {"text": "pre", "calls": [("f", {}), ("g", {"x": [1]})], "finish": "STOP"}),
    "signature on a last empty part": (text_reply("hi", thought_signature="c2lnLWVuZA=="),
                                       {"text": "hi", "finish": "STOP", "signature": b"sig-end"}),
    "thoughts": (Reply(text="hi", thoughts="deep", thoughts_tokens=7), {"text": "hi", "thoughts": 7}),
    "answer blocked": (blocked_reply(), {"text": None, "finish": "SAFETY"}),
    "answer blocked midway": (blocked_reply(text="partial"), {"text": "partial", "finish": "SAFETY"}),
    "prompt blocked": (blocked_reply(prompt=True), {"text": None, "block": "SAFETY"}),
    "prompt blocked, other": (Reply(block_reason="OTHER"), {"text": None, "block": "OTHER"}),
    "recitation": (text_reply("x", finish_reason="RECITATION"), {"text": "x", "finish": "RECITATION"}),
    "malformed call": (Reply(finish_reason="MALFORMED_FUNCTION_CALL"),
                       {"text": None, "finish": "MALFORMED_FUNCTION_CALL"}),
    **{f"HTTP {status}": (Reply(status=status), {"error": (errors.ClientError if status < 500 else
                                                            errors.ServerError, status)})
       for status in (400, 401, 403, 404, 429, 500, 503, 504)},
    "error event midway": (text_reply("abcdef", error_after=1), {"stream_error": (errors.ServerError, 500)}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("kind", list(ANSWER_KINDS))
def test_answer_kinds(fake: FakeGemini, kind: str, stream: bool) -> None:
    reply, expected = ANSWER_KINDS[kind]
    fake.script(reply)
    client = client_for(fake)
    error = expected.get("error") or (expected.get("stream_error") if stream else None)
    if error is not None:
        with pytest.raises(error[0]) as caught:
            _generate(client, stream)
        assert caught.value.code == error[1]
        return
    answer = _generate(client, stream)
    assert answer.text == expected.get("text", answer.text)
    if "finish" in expected:
        assert answer.candidates and answer.candidates[0].finish_reason == expected["finish"]
    assert [(c.name, c.args) for c in answer.function_calls or []] == expected.get("calls", [])
    if "block" in expected:
        assert answer.prompt_feedback and answer.prompt_feedback.block_reason == expected["block"]
    if "signature" in expected:
        parts = answer.candidates[0].content.parts  # type: ignore[index,union-attr]
        assert parts and parts[-1].thought_signature == expected["signature"]
    usage = answer.usage_metadata
    assert usage is not None
    assert usage.thoughts_token_count == expected.get("thoughts")
    assert usage.total_token_count == sum(n or 0 for n in (
        usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count))


def _generate(client: genai.Client, stream: bool) -> types.GenerateContentResponse:
    """One answer; a stream's chunks folded as a caller would (texts and parts joined, last usage)."""
    if not stream:
        return client.models.generate_content(model="gemini-test", contents="q")
    chunks = list(client.models.generate_content_stream(model="gemini-test", contents="q"))
    last = chunks[-1]
    if not last.candidates:
        return last
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [] if c.candidates and
                                          c.candidates[0].content else [])]
    merged = last.candidates[0].model_copy(update={"content": types.Content(role="model", parts=parts or None)})
    return last.model_copy(update={"candidates": [merged]})


# --- the control API -----------------------------------------------------------------------------

def test_control_routes_set_models_and_move_the_clock(fake: FakeGemini) -> None:
    """What `agentos fake-gemini` users script over HTTP, seen through the official client on v1beta."""
    def control(path: str, body: dict[str, Any]) -> dict[str, Any]:
        sent = urllib.request.Request(f"{fake.url}/_fake/{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(sent) as answer:
            return json.loads(answer.read())

    assert control("models", {"models": ["gemini-a", {"name": "models/gemini-b", "outputTokenLimit": 8}]}) == {
        "models": 2}
    client = genai.Client(api_key=fake.api_key, http_options=types.HttpOptions(base_url=fake.url,
                                                                               api_version="v1beta"))
    assert [(m.name, m.output_token_limit) for m in client.models.list()] == [
        ("models/gemini-a", 65536), ("models/gemini-b", 8)]
    cache = client.caches.create(model="gemini-a", config=types.CreateCachedContentConfig(contents=[LONG],  # type: ignore[arg-type, unused-ignore]
                                                                                          ttl="60s"))
    assert control("clock", {"advance": 61}) == {"offset": 61}
    with pytest.raises(errors.ClientError) as caught:
        client.caches.get(name=cache.name or "")
    assert caught.value.code == 403
    assert {r.path.split("/")[1] for r in fake.requests} == {"v1beta"}


# --- the route inventory -------------------------------------------------------------------------

def test_every_route_is_driven() -> None:
    app = web.Application()
    FakeGemini().routes(app)
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/_fake/"):
            continue  # the control API: the tests' own, no official client has it
        if path == MODEL_ACTION:
            served |= {(route.method, "/{version}/models/{model}:" + action) for action in ACTION_METHODS}
        else:
            served.add((route.method, path))
    assert served == set(DRIVEN), "every route the fake serves needs an official-client test in DRIVEN"
    missing = {test for test in DRIVEN.values() if test not in globals()}
    assert not missing, f"DRIVEN names tests that do not exist: {missing}"
