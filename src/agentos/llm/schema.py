"""JSON Schema as each provider wants it: Gemini's OpenAPI subset or plain JSON Schema.

A THINK's ``functions[].parameters`` are JSON Schema. OpenAI-compatible servers take
them as they are; Gemini's ``parameters`` take a Schema from an OpenAPI 3.0 subset
(llm-wire-formats §2.6). ``gemini_declarations`` converts to that subset without
changing which values are valid, or refuses with ``invalid_argument`` naming the
path of what it cannot convert (``functions[0].parameters.properties.x.$ref``):

- local ``$ref`` (``#/$defs/X``, ``#/definitions/X``, any ``#/`` pointer) is
  inlined, its siblings merged in; a recursive one is refused (Gemini cannot
  express it, and cutting it at some depth would tell the model a smaller truth);
- ``type: [x, "null"]``, ``{type: "null"}`` branches of ``anyOf`` and ``null`` in an
  ``enum`` become ``nullable``; a one-schema ``anyOf``/``allOf`` is merged;
  ``oneOf`` is sent as ``anyOf``;
- ``const`` and ``enum`` become Gemini's string ``enum``; numbers as their decimal
  text with ``format: enum``, as Gemini documents for ``INTEGER``;
- ``additionalProperties: false`` is what a Gemini ``OBJECT`` does anyway and
  ``true``/``{}`` is JSON Schema's default, so neither is sent; a schema for the
  extra values (a typed map) cannot be expressed and is refused;
- an integer's ``exclusiveMinimum``/``exclusiveMaximum`` becomes ``minimum``/``maximum``;
- annotations (``title``, ``examples``, ``$comment``, unknown keys...) and string
  formats Gemini does not take are left out: they make no value valid or invalid;
- any other constraint Gemini has no field for (``not``, ``uniqueItems``,
  ``multipleOf``, ``patternProperties``, tuples...) is refused.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidArgument

#: A schema tree this big after inlining ``$ref``s is a reference bomb, not a tool.
MAX_SCHEMA_NODES = 10_000

_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
#: Formats Gemini's API takes, by type; other formats are annotations in JSON Schema.
_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64", "enum"},
            "NUMBER": {"float", "double", "enum"}}
#: How ``_Converter._own`` reads each keyword Gemini has; any other is structure (read before)
#: or an annotation (``title``, ``examples``, unknown keys), which makes no value valid or not.
_KEYWORDS = {
    **dict.fromkeys(("description", "pattern"), "text"),
    **dict.fromkeys(("minLength", "maxLength", "minItems", "maxItems", "minProperties",
                     "maxProperties"), "count"),
    **dict.fromkeys(("minimum", "maximum"), "bound"),
    **dict.fromkeys(("default", "example"), "any"),
    **dict.fromkeys(("required", "propertyOrdering"), "names"),
    "nullable": "nullable", "properties": "properties", "items": "items",
    "additionalProperties": "additionalProperties"}
#: Keys a ``$ref``'s or a merged branch's siblings may set over what it says.
_ANNOTATIONS = ("description", "default", "example")
#: Constraints without a Gemini field: dropping one would let values through that it forbids.
_UNSUPPORTED = frozenset({
    "not", "if", "then", "else", "patternProperties", "propertyNames", "dependentRequired",
    "dependentSchemas", "dependencies", "unevaluatedProperties", "unevaluatedItems", "contains",
    "minContains", "maxContains", "multipleOf", "prefixItems", "additionalItems", "$dynamicRef",
    "$recursiveRef"})


def gemini_declarations(functions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """THINK ``functions`` as Gemini ``functionDeclarations``; ``invalid_argument`` naming the
    path of a parameters schema that has no Gemini equivalent."""
    out = []
    for index, function in enumerate(functions):
        declaration = {key: value for key, value in function.items() if key != "parameters"}
        if "parameters" in function:
            declaration["parameters"] = to_gemini_schema(function["parameters"],
                                                         f"functions[{index}].parameters")
        out.append(declaration)
    return out


def to_gemini_schema(schema: Any, where: str = "schema") -> dict[str, Any]:
    """One JSON Schema in Gemini's subset; errors name paths under ``where``."""
    return _Converter(schema, where).convert(schema, where)


class _Converter:
    def __init__(self, root: Any, where: str) -> None:
        self.root = root
        self.where = where
        self.nodes = 0
        #: The ``$ref``s being inlined, outermost first: one seen again is a cycle.
        self.expanding: list[str] = []
        #: Each ``$ref`` converted so far, with its size in schemas (a reuse counts again).
        self.done: dict[str, tuple[dict[str, Any], int]] = {}

    def convert(self, schema: Any, path: str) -> dict[str, Any]:
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            raise _refuse(path, "must be a JSON Schema object")
        self._count(1)
        unsupported = _UNSUPPORTED.intersection(schema)
        if unsupported:
            raise _refuse(f"{path}.{min(unsupported)}", "has no equivalent in Gemini's parameters "
                          "schema")
        if schema.get("uniqueItems", False) is not False:
            raise _refuse(f"{path}.uniqueItems", "has no equivalent in Gemini's parameters schema")
        base: dict[str, Any] = {}
        if "$ref" in schema:
            base = self._ref(schema["$ref"], f"{path}.$ref")
        if "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                raise _refuse(f"{path}.allOf", "is an intersection of several schemas, which "
                              "Gemini's parameters schema cannot express: merge them into one")
            base = _merge(base, self.convert(parts[0], f"{path}.allOf[0]"), f"{path}.allOf")
        own = self._own(schema, path)
        if "anyOf" in schema and "oneOf" in schema:
            raise _refuse(f"{path}.oneOf", "with anyOf beside it is an intersection Gemini's "
                          "parameters schema cannot express")
        for key in ("anyOf", "oneOf"):
            if key in schema:
                own = self._union(schema[key], own, f"{path}.{key}")
        out = _merge(base, own, path) if base else own
        for key in ("required", "propertyOrdering"):
            # Gemini refuses a name that is not a declared property.
            for index, name in enumerate(out.get(key, ())):
                if name not in out.get("properties", {}):
                    raise _refuse(f"{path}.{key}[{index}]", f"names {name!r}, which is not in "
                                  "properties")
        return out

    def _count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_SCHEMA_NODES:
            raise _refuse(self.where, f"has more than {MAX_SCHEMA_NODES} schemas once its "
                          "$refs are inlined")

    def _own(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """The schema's own keywords (not ``$ref``, ``allOf``, ``anyOf``, ``oneOf``)."""
        out: dict[str, Any] = {}
        kind = _type(schema["type"], path, out) if "type" in schema else None
        if "enum" in schema or "const" in schema:
            kind = self._enum(schema, kind, path, out)
        if kind is not None:
            out["type"] = kind
        fmt = schema.get("format")
        if fmt is not None:
            if not isinstance(fmt, str):
                raise _refuse(f"{path}.format", "must be a string")
            if out.get("format") is None and fmt in _FORMATS.get(kind or "", ()):
                out["format"] = fmt
        for key, value in schema.items():
            how = _KEYWORDS.get(key)
            if how is None:
                continue
            if how == "text":
                if not isinstance(value, str):
                    raise _refuse(f"{path}.{key}", "must be a string")
                out[key] = value
            elif how == "count":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise _refuse(f"{path}.{key}", "must be a whole number >= 0")
                out[key] = value
            elif how == "bound":
                _number(value, f"{path}.{key}")
                out[key] = value
            elif how == "any":
                out[key] = value
            elif how == "names":
                if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                    raise _refuse(f"{path}.{key}", "must be a list of property names")
                out[key] = list(value)
            elif how == "nullable":
                if not isinstance(value, bool):
                    raise _refuse(f"{path}.{key}", "must be true or false")
                out["nullable"] = out.get("nullable", False) or value
            elif how == "properties":
                if not isinstance(value, dict):
                    raise _refuse(f"{path}.{key}", "must map property names to schemas")
                out["properties"] = {name: self.convert(sub, f"{path}.properties.{name}")
                                     for name, sub in value.items()}
            elif how == "items":
                if isinstance(value, list):
                    raise _refuse(f"{path}.{key}", "is a tuple (a list of schemas), which Gemini's "
                                  "parameters schema cannot express")
                out["items"] = self.convert(value, f"{path}.items")
            elif value is not False and self.convert(value, f"{path}.{key}"):  # additionalProperties
                raise _refuse(f"{path}.{key}", "is a schema for extra properties (a map), which "
                              "Gemini's parameters schema cannot express: list the properties")
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in schema:
                _exclusive(schema[key], key, kind, f"{path}.{key}", out)
        return out

    def _enum(self, schema: dict[str, Any], kind: str | None, path: str,
              out: dict[str, Any]) -> str | None:
        """``enum``/``const`` as Gemini's strings; returns the type, inferred if none was given."""
        if "enum" in schema and "const" in schema:
            raise _refuse(f"{path}.const", "beside enum: keep one of them")
        at = f"{path}.enum" if "enum" in schema else f"{path}.const"
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if not isinstance(values, list):
            raise _refuse(at, "must be a list of values")
        if None in values:
            out["nullable"] = True
            values = [v for v in values if v is not None]
        if not values:
            raise _refuse(at, "allows no value but null")
        if all(isinstance(v, str) for v in values):
            if kind not in (None, "STRING"):
                raise _refuse(at, f"holds strings but the type is {kind.lower()}")
            out["enum"] = list(values)
            return "STRING"
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise _refuse(at, "mixes types or holds booleans, objects or lists; Gemini's enum "
                          "takes strings, or numbers of a number or integer type")
        integral = all(isinstance(v, int) or v.is_integer() for v in values)
        if kind is None:
            kind = "INTEGER" if integral else "NUMBER"
        if kind not in ("INTEGER", "NUMBER") or (kind == "INTEGER" and not integral):
            raise _refuse(at, f"holds numbers that are not of its type {kind.lower()}")
        out["format"] = "enum"
        out["enum"] = [str(int(v)) if kind == "INTEGER" else _decimal(v) for v in values]
        return kind

    def _union(self, branches: Any, own: dict[str, Any], at: str) -> dict[str, Any]:
        """``anyOf``/``oneOf``: null branches make the value nullable, a lone branch merges."""
        if not isinstance(branches, list) or not branches:
            raise _refuse(at, "must be a non-empty list of schemas")
        kept = []
        for index, branch in enumerate(branches):
            converted = self.convert(branch, f"{at}[{index}]")
            if converted == {"nullable": True}:
                own = {**own, "nullable": True}
            else:
                kept.append(converted)
        if not kept:
            return own
        if len(kept) == 1:
            merged = _merged(kept[0], own)
            if merged is not None:
                return merged
        return {**own, "anyOf": kept}

    def _ref(self, ref: Any, at: str) -> dict[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _refuse(at, f"{ref!r} is not a reference inside this schema (#/$defs/...); "
                          "only those can be resolved")
        if ref in self.done:
            converted, nodes = self.done[ref]
            self._count(nodes)
            return converted
        if ref in self.expanding:
            raise _refuse(at, f"{ref} is recursive (it refers back to a schema it is part of); "
                          "Gemini's parameters schema cannot express that")
        target: Any = self.root
        target_path = self.where
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise _refuse(at, f"{ref!r} is not a JSON pointer (#/$defs/Name)")
        for token in pointer.split("/")[1:] if pointer else ():
            name = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and name in target:
                target = target[name]
            elif isinstance(target, list) and name.isdigit() and int(name) < len(target):
                target = target[int(name)]
            else:
                raise _refuse(at, f"{ref} points at nothing in this schema")
            target_path += f".{name}"
        self.expanding.append(ref)
        before = self.nodes
        try:
            converted = self.convert(target, target_path)
        finally:
            self.expanding.pop()
        self.done[ref] = converted, self.nodes - before
        return converted


def _type(value: Any, path: str, out: dict[str, Any]) -> str | None:
    """The Gemini type of a JSON Schema ``type`` (upper case); a ``null`` in it sets ``nullable``."""
    if isinstance(value, str) and value.lower() in _TYPES and value.lower() != "null":
        return value.upper()
    at = f"{path}.type"
    kinds = value if isinstance(value, list) else [value]
    names = []
    for kind in kinds:
        if not isinstance(kind, str) or kind.lower() not in _TYPES:
            raise _refuse(at, f"{kind!r} is not a JSON Schema type ({', '.join(_TYPES)})")
        names.append(kind.lower())
    if "null" in names:
        out["nullable"] = True
        names = [n for n in names if n != "null"]
    if len(set(names)) > 1:
        raise _refuse(at, "lists several types: write them as anyOf, one schema per type")
    return names[0].upper() if names else None


def _exclusive(value: Any, key: str, kind: str | None, at: str, out: dict[str, Any]) -> None:
    """An integer's exclusive bound is the next integer in; a number has no such bound."""
    bound = "minimum" if key == "exclusiveMinimum" else "maximum"
    if value is False:
        return
    draft4 = value is True  # draft 4: true makes ``minimum``/``maximum`` itself exclusive
    if draft4:
        if bound not in out:
            raise _refuse(at, f"is true but there is no {bound}")
        value = out[bound]
    _number(value, at)
    if kind != "INTEGER":
        raise _refuse(at, "has no equivalent in Gemini's parameters schema, except for integers")
    inner = math.floor(value) + 1 if bound == "minimum" else math.ceil(value) - 1
    out[bound] = inner if draft4 or bound not in out else _tighter(bound, out[bound], inner)


def _tighter(bound: str, a: float, b: float) -> float:
    return max(a, b) if bound == "minimum" else min(a, b)


def _number(value: Any, at: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _refuse(at, "must be a number")


def _decimal(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else repr(float(value))


def _merged(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any] | None:
    """``over`` laid on ``under``: annotations of ``over`` win, ``nullable`` adds up; None when
    they disagree about a constraint."""
    out = dict(under)
    for key, value in over.items():
        if key == "nullable":
            out[key] = out.get(key, False) or value
        elif key in _ANNOTATIONS or out.get(key, value) == value:
            out[key] = value
        else:
            return None
    return out


def _merge(under: dict[str, Any], over: dict[str, Any], at: str) -> dict[str, Any]:
    merged = _merged(under, over)
    if merged is None:
        clash = sorted(k for k in over if k in under and under[k] != over[k]
                       and k not in _ANNOTATIONS and k != "nullable")
        raise _refuse(at, f"says {', '.join(clash)} differently from the schema it refers to or "
                      "combines ($ref, allOf): Gemini's parameters schema cannot intersect them")
    return merged


def _refuse(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {reason}", field=path)


def to_json_schema(schema: Any) -> Any:
    """Lower-case ``type`` as JSON Schema (and OpenAI) expect, recursively."""
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = to_json_schema(value)
    return out
