"""Validate SPAWN, KILL, WAIT and LOGS arguments into typed requests (clear errors, no surprises)."""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from ..cgroups import Limits
from ..errors import InvalidArgument
from ..units import parse_duration

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPAWN_KEYS = frozenset({"name", "script", "command", "args", "env", "cwd", "sandboxed", "network",
                         "limits", "allow_degraded", "writable_paths", "readonly_paths", "hostname",
                         # Checked and acted on by the supervisor service.
                         "restart",
                         # The agent's THINK defaults and budgets, handed to the LLM gateway on agent.started.
                         "llm"})
#: What an agent's ``llm`` may say, and the type of each.
_LLM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "provider": str, "model": str, "system": str, "temperature": (int, float), "tokens": int,
    "calls_per_minute": int}
#: Kernel-set variables an agent may not override (its connection and identity).
RESERVED_ENV = frozenset({"AGENTOS_FD", "AGENTOS_AGENT_ID", "AGENTOS_AGENT_NAME"})


@dataclass
class SpawnRequest:
    """A SPAWN payload, checked."""

    name: str
    argv: list[str]
    #: The Python file when the agent is a script: it runs as ``sys.argv = [script, *argv[1:]]``
    #: (``argv[0]`` is then the interpreter).
    script: str | None
    env: dict[str, str]
    cwd: str | None
    limits: Limits
    sandboxed: bool
    network: bool
    allow_degraded: bool
    writable_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    #: The agent's hostname in its own UTS namespace (sandboxed only); None: its name.
    hostname: str | None = None
    #: THINK defaults and budgets (model, system, temperature, tokens, calls_per_minute), if given.
    llm: dict[str, Any] | None = None

    @classmethod
    def parse(cls, args: dict[str, Any]) -> SpawnRequest:
        unknown = sorted(set(args) - _SPAWN_KEYS)
        if unknown:
            raise InvalidArgument(f"SPAWN: unknown field(s) {unknown}; known: {sorted(_SPAWN_KEYS)}")
        script, command = args.get("script"), args.get("command")
        if (script is None) == (command is None):
            raise InvalidArgument("SPAWN needs exactly one of script (a Python file) or command "
                                  "(a program and its arguments)")
        cwd = _optional_str(args, "cwd")
        if cwd is not None and not os.path.isabs(cwd):
            raise InvalidArgument(f"cwd must be an absolute path, got {cwd!r}")
        extra = _str_list(args, "args")
        env = _env(args.get("env"))
        if script is not None:
            path = _absolute(_require_str(script, "script"), cwd, "script")
            if not os.path.isfile(path):
                raise InvalidArgument(f"script {path!r} does not exist or is not a file", script=path)
            argv = [sys.executable, *extra]
        else:
            argv = [*_command(command, env, cwd), *extra]
            path = None
        name = args.get("name")
        if name is None:
            name = os.path.splitext(os.path.basename(path or argv[0]))[0] or "agent"
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(f"name {name!r} is not valid: 1-64 characters of letters, digits, "
                                  "'_', '.', '-', starting with a letter or digit")
        try:
            limits = Limits.from_request(args.get("limits"))
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        sandboxed = _bool(args, "sandboxed", True)
        hostname = _optional_str(args, "hostname")
        if hostname is not None and not sandboxed:
            raise InvalidArgument("hostname needs sandboxed: only a sandboxed agent has its own hostname")
        return cls(name=name, argv=argv, script=path, env=env, cwd=cwd, limits=limits,
                   sandboxed=sandboxed, network=_bool(args, "network", False), hostname=hostname,
                   llm=_llm(args.get("llm")),
                   allow_degraded=_bool(args, "allow_degraded", False),
                   writable_paths=[_absolute(p, cwd, "writable_paths") for p in _str_list(args, "writable_paths")],
                   readonly_paths=[_absolute(p, cwd, "readonly_paths") for p in _str_list(args, "readonly_paths")])


def parse_grace(args: dict[str, Any], default: float) -> float:
    value = args.get("grace")
    if value is None:
        return default
    try:
        return parse_duration(value, "grace")
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def parse_timeout(args: dict[str, Any]) -> float | None:
    value = args.get("timeout")
    if value is None:
        return None
    try:
        return parse_duration(value, "timeout")
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def parse_int(args: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _command(command: Any, env: dict[str, str], cwd: str | None) -> list[str]:
    if isinstance(command, str):
        argv = [command]
    elif isinstance(command, list) and command and all(isinstance(a, str) for a in command):
        argv = list(command)
    else:
        raise InvalidArgument("command must be a program path or a non-empty list of strings "
                              "(no shell is involved)")
    program = argv[0]
    if "/" in program:
        resolved: str | None = _absolute(program, cwd, "command")
        if not os.access(resolved, os.X_OK) or not os.path.isfile(resolved):  # type: ignore[arg-type]
            resolved = None
    else:
        resolved = shutil.which(program, path=env.get("PATH", os.defpath))
    if resolved is None:
        raise InvalidArgument(f"command {program!r} is not an executable file (looked up in PATH "
                              "when it has no '/')", command=program)
    return [resolved, *argv[1:]]


def _absolute(path: str, cwd: str | None, what: str) -> str:
    if os.path.isabs(path):
        return os.path.normpath(path)
    if cwd is None:
        raise InvalidArgument(f"{what}: {path!r} is relative; give an absolute path or a cwd")
    return os.path.normpath(os.path.join(cwd, path))


def _llm(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"llm must be an object such as {{'model': ..., 'temperature': 0.2}}, "
                              f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_LLM_FIELDS))
    if unknown:
        raise InvalidArgument(f"llm: unknown field(s) {unknown}; known: {list(_LLM_FIELDS)}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, _LLM_FIELDS[key]):
            raise InvalidArgument(f"llm.{key} has the wrong type: {value!r}")
        if key in ("tokens", "calls_per_minute") and isinstance(value, int) and value < 1:
            raise InvalidArgument(f"llm.{key} must be at least 1, got {value}")
    return dict(raw)


def _env(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"env must be an object of strings, got {type(raw).__name__}")
    env: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise InvalidArgument(f"env: {key!r} is not a valid variable name")
        if key in RESERVED_ENV:
            raise InvalidArgument(f"env: {key} is set by the kernel and cannot be overridden")
        if not isinstance(value, str) or "\0" in value:
            raise InvalidArgument(f"env: the value of {key} must be a string without NUL bytes")
        env[key] = value
    return env


def _str_list(args: dict[str, Any], key: str) -> list[str]:
    value = args.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
        raise InvalidArgument(f"{key} must be a list of strings")
    return list(value)


def _require_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidArgument(f"{key} must be a non-empty string")
    return value


def _optional_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    return None if value is None else _require_str(value, key)


def _bool(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} must be true or false, got {value!r}")
    return value
