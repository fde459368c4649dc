"""Function declarations from Python functions, and THINK request validation."""
from __future__ import annotations

import enum
from typing import Literal

import pytest

from agentos.client.think import image_part, think_request
from agentos.client.tools import Toolbox, declaration
from agentos.errors import InvalidArgument
from agentos.llm.request import parse_think


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def forecast(city: str, days: int, unit: Unit = Unit.C, hourly: bool | None = None,
             tags: list[str] | None = None, mode: Literal["brief", "full"] = "brief") -> dict:
    """Weather forecast for a city.

    Longer explanation that the model does not need.

    Args:
        city: City name.
        days (int): How many days ahead.
    """
    return {}


def test_declaration_from_hints_and_docstring() -> None:
    decl = declaration(forecast)
    assert decl["name"] == "forecast" and decl["description"] == "Weather forecast for a city."
    props = decl["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "City name."}
    assert props["days"] == {"type": "integer", "description": "How many days ahead."}
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"]}
    assert props["hourly"] == {"type": "boolean", "nullable": True}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "nullable": True}
    assert props["mode"] == {"type": "string", "enum": ["brief", "full"]}
    assert decl["parameters"]["required"] == ["city", "days"]


def test_declaration_refuses_what_it_cannot_describe() -> None:
    def untyped(x):
        return x

    def variadic(*args: int) -> None:
        pass

    with pytest.raises(TypeError, match="type hint"):
        declaration(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        declaration(variadic)


def test_toolbox_reports_errors_to_the_model_instead_of_raising() -> None:
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    box = Toolbox(divide)
    assert box._invoke({"id": "c1", "name": "divide", "args": {"a": 1, "b": 0}}) == {
        "id": "c1", "name": "divide", "response": {"error": "ZeroDivisionError: division by zero"}}
    assert box._invoke({"name": "nope", "args": {}})["response"] == {"error": "no function named 'nope'"}
    with pytest.raises(ValueError, match="already registered"):
        box.register(divide)


def test_sdk_builds_the_json_form() -> None:
    request = think_request("hi", functions=[forecast], images=[b"\xff\xd8\xff\xe0jpeg"],
                            temperature=0.5)
    assert request["prompt"] == "hi" and "stream" not in request  # think_stream's to add
    request["stream"] = True
    assert request["functions"][0]["name"] == "forecast"
    assert request["images"][0]["mime_type"] == "image/jpeg"
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        think_request("hi", temprature=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown image type"):
        image_part(b"not an image")
    parsed = parse_think(__import__("ujson").dumps(request).encode())
    assert parsed.stream and parsed.options.temperature == 0.5
    assert parsed.turns[0]["parts"][1]["inlineData"]["mimeType"] == "image/jpeg"


def test_plain_text_and_json_forms() -> None:
    plain = parse_think(b"  What is 2+2?  ")
    assert plain.plain and plain.turns == [{"role": "user", "parts": [{"text": "What is 2+2?"}]}]
    not_json = parse_think(b"{not json} is still a prompt")
    assert not_json.plain
    messages = parse_think(b'{"messages": [{"role": "system", "content": "S"}, '
                           b'{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
                           b'{"role": "user", "content": "c"}]}')
    assert messages.system == "S" and [t["role"] for t in messages.turns] == ["user", "model", "user"]
    answered = parse_think(b'{"function_responses": [{"id": "c1", "name": "f", "response": 3}]}')
    assert answered.turns == [{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"result": 3}, "id": "c1"}}]}]


@pytest.mark.parametrize("payload,message", [
    (b"", "needs a prompt"),
    (b'{"system": "only"}', "needs 'prompt'"),
    (b'{"messages": [{"role": "model", "content": "x"}]}', "end with a user turn"),
    (b'{"messages": [{"role": "tool", "content": "x"}]}', "role must be"),
    (b'{"prompt": "x", "top_k": 0}', "top_k"),
    (b'{"prompt": "x", "stream": "yes"}', "stream must be true or false"),
    (b'{"prompt": "x", "functions": [{"name": "9bad"}]}', "functions\\[0\\].name"),
    (b'{"prompt": "x", "images": [{"mime_type": "image/png", "data": "@@@"}]}', "not base64"),
    (b'{"prompt": "x", "function_mode": "sometimes"}', "function_mode"),
    (b'{"prompt": "x", "thinking_level": "extreme"}', "thinking_level"),
])
def test_invalid_requests_name_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_think(payload)
