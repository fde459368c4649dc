"""FakeGemini driven by the official ``google-genai`` client: what it sends, the fake accepts and
answers as the real API does, and what the fake answers, the client parses.

Each route the fake serves is listed in DRIVEN with the test that drives it;
``test_every_route_is_driven`` fails when a route is added without one.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from google import genai
from google.genai import types

from agentos.testing import FakeGemini, call_reply

# Bytes whose standard base64 uses '+' and '/', so a URL-safe re-encoding differs in text.
SIGNATURE = base64.b64encode(b"\xfb\xef\xbe-signature-\xff\xfe").decode()


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini()
    with server.running_in_thread():
        yield server


def client_for(fake: FakeGemini, **http: object) -> genai.Client:
    return genai.Client(api_key=fake.api_key,
                        http_options=types.HttpOptions(base_url=fake.url, **http))  # type: ignore[arg-type]


WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather in a city",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]))])


def test_tool_loop_with_signatures(fake: FakeGemini) -> None:
    """The SDK re-encodes a signature URL-safe; strict mode compares the bytes and accepts it."""
    assert "+" in SIGNATURE or "/" in SIGNATURE
    fake.script(call_reply(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
                           thought_signature=SIGNATURE))
    client = client_for(fake)
    config = types.GenerateContentConfig(tools=[WEATHER])
    history: list[types.Content] = [types.Content(role="user", parts=[types.Part(text="Weather?")])]
    first = client.models.generate_content(model="gemini-test", contents=history, config=config)
    calls = first.function_calls or []
    assert [c.args for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    model_turn = first.candidates[0].content  # type: ignore[index]
    assert model_turn is not None and model_turn.parts is not None
    assert base64.b64encode(model_turn.parts[0].thought_signature or b"").decode() == SIGNATURE
    history += [model_turn, types.Content(role="user", parts=[
        types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name, response={"result": "sunny"}))
        for c in calls])]
    second = client.models.generate_content(model="gemini-test", contents=history, config=config)
    assert second.text == 'Function results: [{"result":"sunny"},{"result":"sunny"}]'
    replayed = fake.requests[-1].body["contents"][1]["parts"][0]["thoughtSignature"]
    assert replayed != SIGNATURE, "the SDK is expected to re-encode the signature"
    assert base64.urlsafe_b64decode(replayed + "=" * (-len(replayed) % 4)) == base64.b64decode(SIGNATURE)


def test_a_changed_signature_is_still_refused(fake: FakeGemini) -> None:
    fake.script(call_reply(("get_weather", {"city": "Paris"}), thought_signature=SIGNATURE))
    client = client_for(fake)
    config = types.GenerateContentConfig(tools=[WEATHER])
    history: list[types.Content] = [types.Content(role="user", parts=[types.Part(text="Weather?")])]
    first = client.models.generate_content(model="gemini-test", contents=history, config=config)
    turn = first.candidates[0].content  # type: ignore[index]
    assert turn is not None and turn.parts is not None
    turn.parts[0].thought_signature = b"another"
    call = turn.parts[0].function_call
    assert call is not None
    history += [turn, types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=call.id, name=call.name, response={"result": "sunny"}))])]
    with pytest.raises(genai.errors.ClientError) as caught:
        client.models.generate_content(model="gemini-test", contents=history, config=config)
    assert caught.value.code == 400
    assert "thought_signature" in (caught.value.message or "")
