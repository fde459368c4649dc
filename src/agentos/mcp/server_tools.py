"""The tools ``agentos mcp`` offers: their names, strict input schemas and how arguments are checked.

Every schema is closed (``additionalProperties: false``) and bounded, so a model that invents a
field or sends a wrong type gets a tool error naming the field, never a half-understood call.
Which tools a server lists depends on its capabilities (``think`` and ``state`` only when granted).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import mcp_types as types

from ..protocol.requests import ENV_NAME_SCHEMA_PATTERN

#: Where a tool's ``sandbox`` argument comes from: the name ``sandbox_create`` answered.
_SANDBOX = {"type": "string", "minLength": 1, "maxLength": 100,
            "description": "the sandbox's name, as sandbox_create returned it"}
_PATH = {"type": "string", "minLength": 1, "maxLength": 4096}
_SIZE = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1, "maxLength": 32}]}
_SECONDS = {"type": "number", "exclusiveMinimum": 0, "maximum": 86400}
_ENV = {"type": "object", "maxProperties": 128,
        "propertyNames": {"pattern": ENV_NAME_SCHEMA_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": 65536}}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False, **extra}


SANDBOX_TOOLS: dict[str, tuple[str, dict[str, Any], types.ToolAnnotations]] = {
    "sandbox_create": (
        "Start a new isolated Linux sandbox (its own namespaces, seccomp, Landlock and cgroup limits; no "
        "network unless allowed). Returns its name, which every other tool takes as `sandbox`. It ends "
        "with this session, after its timeout, or when killed.",
        _closed({
            "template": {"type": "string", "minLength": 1, "maxLength": 64,
                         "description": "one of the kernel's sandbox templates (preloaded modules)"},
            "limits": _closed({
                "memory": {**_SIZE, "description": "e.g. '512Mi'"},
                "cpu": {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                                  {"type": "string", "minLength": 1, "maxLength": 16}],
                        "description": "cores, or millicores as '500m'"},
                "pids": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                "tmp": {**_SIZE, "description": "size of its /tmp, e.g. '64Mi'"},
            }),
            "network": {"type": "boolean", "description": "the host's network (only if the server allows it)"},
            "timeout": {**_SECONDS, "description": "seconds until the sandbox is stopped"},
        }),
        types.ToolAnnotations(title="Create a sandbox", destructive_hint=False, open_world_hint=False)),
    "exec": (
        "Run a command in a sandbox and wait for it: its stdout, stderr and exit code. Give `argv` (a "
        "program and its arguments) or `cmd` (a /bin/sh command line).",
        _closed({
            "sandbox": _SANDBOX,
            "argv": {"type": "array", "minItems": 1, "maxItems": 4096,
                     "items": {"type": "string", "maxLength": 65536}},
            "cmd": {"type": "string", "minLength": 1, "maxLength": 1 << 20},
            "stdin": {"type": "string", "maxLength": 8 << 20},
            "env": _ENV,
            "cwd": _PATH,
            "timeout": {**_SECONDS, "description": "seconds before the command is killed (default 60)"},
        }, ("sandbox",), oneOf=[{"required": ["argv"]}, {"required": ["cmd"]}]),
        types.ToolAnnotations(title="Run a command", destructive_hint=True, open_world_hint=False)),
    "run_code": (
        "Run Python in the sandbox's interpreter, which keeps its variables between calls (a notebook "
        "kernel). Returns stdout, stderr, the last expression's value, an error if one was raised, and "
        "images (matplotlib figures, display()) as image content.",
        _closed({
            "sandbox": _SANDBOX,
            "code": {"type": "string", "maxLength": 4 << 20},
            "timeout": {**_SECONDS, "description": "seconds before the interpreter is killed (default 60)"},
        }, ("sandbox", "code")),
        types.ToolAnnotations(title="Run Python", destructive_hint=True, open_world_hint=False)),
    "files_read": (
        "Read a file of a sandbox (UTF-8 text, or base64 when it is not text).",
        _closed({"sandbox": _SANDBOX, "path": _PATH,
                 "offset": {"type": "integer", "minimum": 0},
                 "length": {"type": "integer", "minimum": 0, "maximum": 8 << 20}}, ("sandbox", "path")),
        types.ToolAnnotations(title="Read a file", read_only_hint=True, open_world_hint=False)),
    "files_write": (
        "Write a file in a sandbox (created with its directories, or replaced; `append` adds to its end).",
        _closed({"sandbox": _SANDBOX, "path": _PATH,
                 "content": {"type": "string", "maxLength": 16 << 20},
                 "encoding": {"enum": ["utf-8", "base64"]},
                 "append": {"type": "boolean"}}, ("sandbox", "path", "content")),
        types.ToolAnnotations(title="Write a file", destructive_hint=True, open_world_hint=False)),
    "files_list": (
        "List a directory of a sandbox: each entry's path, type and size.",
        _closed({"sandbox": _SANDBOX, "path": _PATH,
                 "depth": {"type": "integer", "minimum": 1, "maximum": 8}}, ("sandbox",)),
        types.ToolAnnotations(title="List a directory", read_only_hint=True, open_world_hint=False)),
    "sandbox_kill": (
        "Stop a sandbox and everything running in it.",
        _closed({"sandbox": _SANDBOX}, ("sandbox",)),
        types.ToolAnnotations(title="Kill a sandbox", destructive_hint=True, idempotent_hint=True,
                              open_world_hint=False)),
    "sandbox_list": (
        "The sandboxes of this session.",
        _closed({}),
        types.ToolAnnotations(title="List sandboxes", read_only_hint=True, open_world_hint=False)),
}

THINK_TOOLS: dict[str, tuple[str, dict[str, Any], types.ToolAnnotations]] = {
    "think": (
        "Ask the kernel's model (on the server's budget) and get its answer as text.",
        _closed({"prompt": {"type": "string", "minLength": 1, "maxLength": 1 << 20},
                 "system": {"type": "string", "maxLength": 1 << 20},
                 "model": {"type": "string", "minLength": 1, "maxLength": 200},
                 "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 1 << 20}}, ("prompt",)),
        types.ToolAnnotations(title="Ask the model", read_only_hint=True, open_world_hint=True)),
}

_KEY = {"type": "string", "minLength": 1, "maxLength": 512}
STATE_TOOLS: dict[str, tuple[str, dict[str, Any], types.ToolAnnotations]] = {
    "state_get": ("A value this session stored (null if none).", _closed({"key": _KEY}, ("key",)),
                  types.ToolAnnotations(title="Read a value", read_only_hint=True, open_world_hint=False)),
    "state_set": ("Store a JSON value under a key, for this session.",
                  _closed({"key": _KEY, "value": {}, "ttl": _SECONDS}, ("key", "value")),
                  types.ToolAnnotations(title="Store a value", destructive_hint=True, open_world_hint=False)),
    "state_delete": ("Delete a key of this session's.", _closed({"key": _KEY}, ("key",)),
                     types.ToolAnnotations(title="Delete a value", destructive_hint=True, open_world_hint=False)),
    "state_keys": ("The keys this session stored (with a prefix, if given).",
                   _closed({"prefix": {"type": "string", "maxLength": 512}}),
                   types.ToolAnnotations(title="List keys", read_only_hint=True, open_world_hint=False)),
}


class ToolError(Exception):
    """A tool call that cannot be served: its message goes back as the tool's error result."""


def tools(table: Mapping[str, tuple[str, dict[str, Any], types.ToolAnnotations]]) -> list[types.Tool]:
    return [types.Tool(name=name, description=description, input_schema=schema, annotations=annotations)
            for name, (description, schema, annotations) in table.items()]


_VALIDATORS: dict[str, Any] = {
    name: jsonschema.Draft202012Validator(schema)
    for table in (SANDBOX_TOOLS, THINK_TOOLS, STATE_TOOLS) for name, (_, schema, _) in table.items()}


def check_arguments(tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """``arguments`` if they fit the tool's schema; else a ``ToolError`` naming the field."""
    validator = _VALIDATORS[tool]
    value = dict(arguments or {})
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "arguments"
        if error.validator == "oneOf" and not error.absolute_path and tool == "exec":
            raise ToolError("invalid arguments: exec needs exactly one of `argv` (a list) or `cmd` (a string)")
        raise ToolError(f"invalid arguments: {where}: {error.message}")
    return value
