"""Function parameters as Gemini takes them: JSON Schema converted to its OpenAPI subset, or refused
with the path of what cannot be converted; OpenAI-compatible servers get the JSON Schema as it is."""
from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from agentos.errors import InvalidArgument
from agentos.llm import openai_compat
from agentos.llm.provider import Provider
from agentos.llm.schema import MAX_SCHEMA_NODES, gemini_declarations, to_gemini_schema
from agentos.llm.types import ModelRequest
from agentos.testing import FakeGemini, text_reply

WHERE = "functions[0].parameters"


def gemini(schema: dict[str, Any]) -> dict[str, Any]:
    return to_gemini_schema(schema, WHERE)


def refused(schema: Any) -> str:
    """The path an invalid_argument names for ``schema`` (and that it is in the message)."""
    with pytest.raises(InvalidArgument) as caught:
        gemini(schema)
    path = caught.value.details["field"]
    assert caught.value.message.startswith(f"{path}: ")
    return str(path)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip: str | None = None


# A pydantic model as tool parameters: $defs, Optional, Literal, enums, bounds (no docstring:
# it would be the schema's description).
class Person(BaseModel):
    name: str = Field(description="Full name")
    age: int = Field(gt=0, le=150)
    level: Level
    color: Color = Color.RED
    kind: Literal["person"] = "person"
    version: Literal[2]
    home: Address
    work: Address | None = None
    nick: str | None = None


ADDRESS = {"type": "OBJECT",
           "properties": {"street": {"type": "STRING"},
                          "zip": {"type": "STRING", "nullable": True, "default": None}},
           "required": ["street"]}


def test_a_pydantic_model_with_defs_is_inlined_exactly() -> None:
    assert gemini(Person.model_json_schema()) == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "description": "Full name"},
            "age": {"type": "INTEGER", "minimum": 1, "maximum": 150},
            "level": {"type": "INTEGER", "format": "enum", "enum": ["1", "3"]},
            "color": {"type": "STRING", "enum": ["red", "blue"], "default": "red"},
            "kind": {"type": "STRING", "enum": ["person"], "default": "person"},
            "version": {"type": "INTEGER", "format": "enum", "enum": ["2"]},
            "home": ADDRESS,
            "work": {**ADDRESS, "nullable": True, "default": None},
            "nick": {"type": "STRING", "nullable": True, "default": None},
        },
        "required": ["name", "age", "level", "version", "home"],
    }


class Route(BaseModel):
    stops: list[Address]
    legs: list[list[float]] = Field(description="Distances per leg", min_length=1)
    notes: list[str | None] = []


def test_nested_arrays_and_refs_in_items() -> None:
    assert gemini(Route.model_json_schema()) == {
        "type": "OBJECT",
        "properties": {
            "stops": {"type": "ARRAY", "items": ADDRESS},
            "legs": {"type": "ARRAY", "description": "Distances per leg", "minItems": 1,
                     "items": {"type": "ARRAY", "items": {"type": "NUMBER"}}},
            "notes": {"type": "ARRAY", "default": [],
                      "items": {"type": "STRING", "nullable": True}},
        },
        "required": ["stops", "legs"],
    }


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "integer", "enum": [10, 20]}, {"type": "INTEGER", "format": "enum", "enum": ["10", "20"]}),
    ({"enum": [1, 2]}, {"type": "INTEGER", "format": "enum", "enum": ["1", "2"]}),
    ({"enum": [0.5, 2]}, {"type": "NUMBER", "format": "enum", "enum": ["0.5", "2"]}),
    ({"type": "integer", "enum": [1.0, 2]}, {"type": "INTEGER", "format": "enum", "enum": ["1", "2"]}),
    ({"enum": ["a", "b", None]}, {"type": "STRING", "enum": ["a", "b"], "nullable": True}),
    ({"const": "x"}, {"type": "STRING", "enum": ["x"]}),
    ({"const": 7, "type": "integer", "title": "Seven"}, {"type": "INTEGER", "format": "enum", "enum": ["7"]}),
    ({"type": ["integer", "null"], "format": "int64"},
     {"type": "INTEGER", "format": "int64", "nullable": True}),
    ({"type": "STRING", "format": "date-time"}, {"type": "STRING", "format": "date-time"}),
    # Formats Gemini does not take are annotations in JSON Schema.
    ({"type": "string", "format": "uri", "maxLength": 200}, {"type": "STRING", "maxLength": 200}),
    ({"type": "integer", "exclusiveMinimum": 0, "minimum": 5}, {"type": "INTEGER", "minimum": 5}),
    ({"type": "integer", "minimum": 3, "exclusiveMinimum": True, "maximum": 9, "exclusiveMaximum": True},
     {"type": "INTEGER", "minimum": 4, "maximum": 8}),
    ({"type": "integer", "exclusiveMaximum": 2.5}, {"type": "INTEGER", "maximum": 2}),
    ({"anyOf": [{"type": "null"}, {"type": "string"}], "description": "d"},
     {"type": "STRING", "nullable": True, "description": "d"}),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]},
     {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
    ({"allOf": [{"type": "string", "description": "inner"}], "description": "outer"},
     {"type": "STRING", "description": "outer"}),
    (True, {}),
    ({"type": "array", "items": {"$comment": "anything", "examples": [1]}, "uniqueItems": False},
     {"type": "ARRAY", "items": {}}),
])
def test_conversions(schema: Any, expected: dict[str, Any]) -> None:
    assert gemini(schema) == expected


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str
    options: dict[str, Any] = {}


class Scores(BaseModel):
    scores: dict[str, int]


def test_additional_properties_false_and_true_are_what_gemini_does_a_map_is_refused() -> None:
    assert gemini(Strict.model_json_schema()) == {
        "type": "OBJECT",
        "properties": {"query": {"type": "STRING"}, "options": {"type": "OBJECT", "default": {}}},
        "required": ["query"],
    }
    assert refused(Scores.model_json_schema()) == f"{WHERE}.properties.scores.additionalProperties"


class Node(BaseModel):
    label: str
    children: list[Node] = []


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="pet_type")]


def test_a_tagged_union_becomes_any_of_its_branches() -> None:
    assert gemini(Owner.model_json_schema()) == {
        "type": "OBJECT",
        "properties": {"pet": {"anyOf": [
            {"type": "OBJECT", "properties": {"pet_type": {"type": "STRING", "enum": ["cat"]},
                                              "meows": {"type": "INTEGER"}},
             "required": ["pet_type", "meows"]},
            {"type": "OBJECT", "properties": {"pet_type": {"type": "STRING", "enum": ["dog"]},
                                              "barks": {"type": "NUMBER"}},
             "required": ["pet_type", "barks"]},
        ]}},
        "required": ["pet"],
    }


def test_a_recursive_ref_is_refused_where_it_closes_the_cycle() -> None:
    assert refused(Node.model_json_schema()) == f"{WHERE}.$defs.Node.properties.children.items.$ref"
    assert refused({"type": "object", "properties": {"self": {"$ref": "#"}}}) == \
        f"{WHERE}.properties.self.$ref"


def test_refs_to_shared_definitions_are_not_cycles() -> None:
    point = {"type": "object", "properties": {"x": {"type": "number"}}}
    schema = {"$defs": {"P": point, "Line": {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#/definitions/P"}}}},
        "definitions": {"P": point}, "type": "object",
        "properties": {"line": {"$ref": "#/$defs/Line"}, "p": {"$ref": "#/$defs/P"}}}
    p = {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}}
    assert gemini(schema) == {"type": "OBJECT", "properties": {
        "line": {"type": "OBJECT", "properties": {"a": p, "b": p}}, "p": p}}


def test_a_reference_bomb_is_refused() -> None:
    defs: dict[str, Any] = {"L0": {"type": "string"}}
    for level in range(1, 20):
        below = {"$ref": f"#/$defs/L{level - 1}"}
        defs[f"L{level}"] = {"type": "object", "properties": {"a": below, "b": below}}
    schema = {"$defs": defs, "type": "object", "properties": {"top": {"$ref": "#/$defs/L19"}}}
    with pytest.raises(InvalidArgument, match=f"more than {MAX_SCHEMA_NODES} schemas"):
        gemini(schema)


@pytest.mark.parametrize(("schema", "path"), [
    ({"type": "object", "properties": {"x": {"$ref": "other.json#/X"}}}, ".properties.x.$ref"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}}, ".properties.x.$ref"),
    ({"type": "object", "properties": {"x": {"$ref": "#defs"}}}, ".properties.x.$ref"),
    ({"type": "object", "properties": {"x": {"const": True}}}, ".properties.x.const"),
    ({"type": "object", "properties": {"x": {"const": {"a": 1}}}}, ".properties.x.const"),
    ({"enum": ["a", 1]}, ".enum"),
    ({"type": "string", "enum": [1, 2]}, ".enum"),
    ({"type": "integer", "enum": [1.5]}, ".enum"),
    ({"enum": [None]}, ".enum"),
    ({"enum": "a"}, ".enum"),
    ({"const": "a", "enum": ["a"]}, ".const"),
    ({"type": ["string", "integer"]}, ".type"),
    ({"type": "date"}, ".type"),
    ({"type": "array", "items": [{"type": "string"}]}, ".items"),
    ({"type": "array", "prefixItems": [{"type": "string"}]}, ".prefixItems"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, ".uniqueItems"),
    ({"type": "number", "multipleOf": 0.5}, ".multipleOf"),
    ({"type": "number", "exclusiveMinimum": 0}, ".exclusiveMinimum"),
    ({"type": "integer", "exclusiveMaximum": True}, ".exclusiveMaximum"),
    ({"not": {"type": "string"}}, ".not"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, ".patternProperties"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, ".if"),
    ({"allOf": [{"type": "string"}, {"minLength": 1}]}, ".allOf"),
    ({"allOf": [{"type": "string"}], "type": "integer"}, ""),
    ({"$defs": {"S": {"type": "string"}}, "$ref": "#/$defs/S", "type": "integer"}, ""),
    ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}, ".oneOf"),
    ({"anyOf": []}, ".anyOf"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
     ".required[1]"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "propertyOrdering": "a"},
     ".propertyOrdering"),
    ({"type": "object", "properties": {"a": False}}, ".properties.a"),
    ({"type": "object", "properties": {"a": {"description": 3}}}, ".properties.a.description"),
    ({"type": "string", "maxLength": -1}, ".maxLength"),
    ({"type": "number", "minimum": "0"}, ".minimum"),
    ({"type": "string", "nullable": "yes"}, ".nullable"),
    ({"type": "string", "format": 5}, ".format"),
    ("string", ""),
])
def test_what_gemini_cannot_express_is_refused_with_its_path(schema: Any, path: str) -> None:
    assert refused(schema) == WHERE + path


def test_each_function_is_named_by_its_index() -> None:
    ok = {"name": "ok", "description": "fine", "parameters": {"type": "object"}}
    bad = {"name": "bad", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/nope"}}}}
    with pytest.raises(InvalidArgument, match=r"^functions\[1\]\.parameters\.properties\.x\.\$ref: "):
        gemini_declarations([ok, bad])
    assert gemini_declarations([ok, {"name": "bare"}]) == [
        {"name": "ok", "description": "fine", "parameters": {"type": "OBJECT"}}, {"name": "bare"}]


def test_the_openai_provider_sends_json_schema_as_it_is() -> None:
    schema = Node.model_json_schema()  # recursive: fine for JSON Schema
    request = ModelRequest(contents=[{"role": "user", "parts": [{"text": "hi"}]}],
                           functions=({"name": "tree", "parameters": schema},))
    body = openai_compat.build_body(request, "gpt-test", stream=False)
    assert body["tools"] == [{"type": "function", "function": {"name": "tree", "parameters": schema}}]


def test_gemini_receives_the_converted_declaration(gemini: Any) -> None:
    async def run(fake: FakeGemini, provider: Provider) -> dict[str, Any]:
        fake.script(text_reply("ok"))
        await provider.generate(ModelRequest(
            contents=[{"role": "user", "parts": [{"text": "where?"}]}],
            functions=({"name": "route", "description": "Plan a route",
                        "parameters": Route.model_json_schema()},)))
        return fake.requests[0].body

    body = gemini(run)
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "route", "description": "Plan a route", "parameters": gemini_of(Route)}]}]


def gemini_of(model: type[BaseModel]) -> dict[str, Any]:
    return to_gemini_schema(model.model_json_schema())


def test_a_schema_gemini_cannot_take_is_an_invalid_argument_error_before_any_call(llm_kernel) -> None:
    bad = {"name": "tree", "description": "A tree", "parameters": Node.model_json_schema()}
    with llm_kernel.client() as c:
        with pytest.raises(InvalidArgument) as caught:
            c.think("grow", functions=[{"name": "ok", "parameters": {"type": "object"}}, bad])
        with pytest.raises(InvalidArgument, match=r"functions\[0\]\.parameters\.additionalProperties"):
            list(c.think_stream("count", functions=[{"name": "scores", "parameters": {
                "type": "object", "additionalProperties": {"type": "integer"}}}]))
        llm_kernel.fake.script(text_reply("fine"))
        assert c.think("grow", functions=[{"name": "ok", "parameters": {"type": "object"}}]).success
        usage = c.usage()
    path = "functions[1].parameters.$defs.Node.properties.children.items.$ref"
    assert caught.value.message.startswith(f"{path}: #/$defs/Node is recursive")
    assert caught.value.details == {"field": path}
    # Only the good call reached the model and counted (the kernel's start-up probe lists models).
    (sent,) = [r for r in llm_kernel.fake.requests if r.method == "POST"]
    assert sent.body["tools"] == [{"functionDeclarations": [
        {"name": "ok", "parameters": {"type": "OBJECT"}}]}]
    assert usage["agents"][usage["you"]]["calls"] == 1
