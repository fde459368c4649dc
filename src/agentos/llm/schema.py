"""JSON Schema as each provider wants it: Gemini's OpenAPI subset or plain JSON Schema."""
from __future__ import annotations

from typing import Any

# Keys Gemini's Schema message does not know; the SDK drops them too.
_GEMINI_DROPPED = {"$schema", "additionalProperties", "title"}


def to_gemini_schema(schema: Any) -> Any:
    """Upper-case ``type`` (the canonical enum form), ``const`` to ``enum``, recursively."""
    if isinstance(schema, list):
        return [to_gemini_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _GEMINI_DROPPED:
            continue
        if key == "type":
            if isinstance(value, list):
                # ["string", "null"] is JSON Schema for an optional value.
                kinds = [v for v in value if v != "null"]
                if len(kinds) == 1:
                    out["type"] = str(kinds[0]).upper()
                    if "null" in value:
                        out["nullable"] = True
                    continue
            out["type"] = str(value).upper()
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: to_gemini_schema(sub) for name, sub in value.items()}
        else:
            out[key] = to_gemini_schema(value)
    return out


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
