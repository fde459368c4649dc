"""The kernel's ``mcp`` section: the MCP servers it runs (a manifest's top-level ``mcp_servers``)
and how tool calls are routed. Every mistake is a ValueError naming its key."""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.requests import MCP_SERVER_PATTERN
from ..supervision.policy import RestartPolicy
from ..units import parse_bytes, parse_cpu, parse_duration

#: A server's name is the first part of its tools' names (``fs.read_file``).
SERVER_NAME = re.compile(MCP_SERVER_PATTERN)
TRANSPORTS = ("stdio",)
_SERVER_KEYS = ("command", "env", "cwd", "network", "writable_paths", "readonly_paths", "limits",
                "restart", "approve", "call_timeout", "transport", "egress", "allow_degraded")
_SECTION_KEYS = ("servers", "approval_timeout", "max_steps", "start_timeout")
_LIMIT_KEYS = ("memory", "cpu", "pids")
#: A server that always crashes must not keep the kernel busy: on-failure, 5 restarts a minute.
DEFAULT_RESTART = RestartPolicy(policy="on-failure")


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server: how to run it, and what its sandbox lets it do."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    #: Off by default, like an agent's: a filesystem or code tool needs no network.
    network: bool = False
    writable_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    #: memory (bytes), cpu (cores), pids; an absent key is the kernel's default for agents.
    limits: dict[str, Any] = field(default_factory=dict)
    restart: RestartPolicy = DEFAULT_RESTART
    #: Tool names or ``*`` patterns of this server whose every call waits for a human.
    approve: tuple[str, ...] = ()
    #: Seconds one tool call may take before the model is told it timed out.
    call_timeout: float = 60.0
    transport: str = "stdio"
    #: Hosts it may reach through the kernel's HTTP syscall (None: the kernel's list).
    egress: tuple[str, ...] | None = None
    allow_degraded: bool = False


@dataclass(frozen=True)
class McpConfig:
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    #: How long a call waits for a human before it is denied.
    approval_timeout: float = 300.0
    #: Model turns one THINK's tool loop may take.
    max_steps: int = 8
    #: How long a server may take to start and answer its tool list.
    start_timeout: float = 60.0

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> McpConfig:
        section = section or {}
        _known(section, _SECTION_KEYS, "mcp")
        servers = section.get("servers") or {}
        if not isinstance(servers, Mapping):
            raise ValueError("mcp.servers: expected a mapping of server names to servers")
        steps = section.get("max_steps", cls.max_steps)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
            raise ValueError(f"mcp.max_steps: expected an integer from 1 to 100, got {steps!r}")
        return cls(servers={str(name): parse_server(name, raw) for name, raw in servers.items()},
                   approval_timeout=_seconds(section, "approval_timeout", cls.approval_timeout, "mcp"),
                   max_steps=steps,
                   start_timeout=_seconds(section, "start_timeout", cls.start_timeout, "mcp"))


def parse_server(name: Any, raw: Any, base: Path | None = None) -> ServerSpec:
    """One entry of ``mcp_servers``; relative paths resolve against ``base`` (a manifest's
    directory), else they are refused."""
    where = f"mcp_servers.{name}"
    if not (isinstance(name, str) and SERVER_NAME.match(name)):
        raise ValueError(f"{where}: a server's name is 1 to 64 letters, digits, _ or - "
                         "(it prefixes its tools' names)")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping with at least 'command'")
    _known(raw, _SERVER_KEYS, where)
    command = raw.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if not (isinstance(command, list) and command and all(isinstance(a, str) and a for a in command)):
        raise ValueError(f"{where}.command: expected a program and its arguments, e.g. "
                         "[npx, -y, '@modelcontextprotocol/server-filesystem', /data]")
    env = raw.get("env") or {}
    if not (isinstance(env, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError(f"{where}.env: expected a mapping of names to strings")
    transport = raw.get("transport", "stdio")
    if transport not in TRANSPORTS:
        raise ValueError(f"{where}.transport: {transport!r} is not supported (this kernel speaks "
                         f"{', '.join(TRANSPORTS)})")
    try:
        restart = (RestartPolicy.from_request(raw["restart"]) if raw.get("restart") is not None
                   else DEFAULT_RESTART)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
    approve = raw.get("approve") or []
    if not (isinstance(approve, list) and all(isinstance(p, str) and p for p in approve)):
        raise ValueError(f"{where}.approve: expected a list of tool names or * patterns")
    egress = raw.get("egress")
    if egress is not None and not (isinstance(egress, list) and all(isinstance(e, str) for e in egress)):
        raise ValueError(f"{where}.egress: expected a list of hosts")
    cwd = raw.get("cwd")
    return ServerSpec(
        name=name, command=tuple(command), env=dict(env),
        cwd=_path(cwd, f"{where}.cwd", base) if cwd is not None else None,
        network=_flag(raw, "network", False, where),
        writable_paths=_paths(raw, "writable_paths", where, base),
        readonly_paths=_paths(raw, "readonly_paths", where, base),
        limits=_limits(raw.get("limits"), f"{where}.limits"), restart=restart, approve=tuple(approve),
        call_timeout=_seconds(raw, "call_timeout", ServerSpec.call_timeout, where),
        transport=transport, egress=tuple(egress) if egress is not None else None,
        allow_degraded=_flag(raw, "allow_degraded", False, where))


def resolve_servers(servers: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``mcp_servers`` as a manifest gives them, checked, with relative paths made absolute
    against ``base``: what the kernel's ``mcp.servers`` receives."""
    out: dict[str, Any] = {}
    for name, raw in servers.items():
        spec = parse_server(name, raw, base)
        entry = dict(raw)
        for key in ("writable_paths", "readonly_paths"):
            if key in entry:
                entry[key] = list(getattr(spec, key))
        if spec.cwd is not None:
            entry["cwd"] = spec.cwd
        out[name] = entry
    return out


def _known(raw: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {', '.join(keys)}")


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = parse_duration(raw.get(key, default), f"{where}.{key}")
    if value <= 0:
        raise ValueError(f"{where}.{key}: must be longer than 0")
    return value


def _path(value: Any, where: str, base: Path | None) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a path, got {value!r}")
    if not os.path.isabs(value):
        if base is None:
            raise ValueError(f"{where}: {value!r} must be an absolute path")
        value = str(base / value)
    return os.path.normpath(value)


def _paths(raw: Mapping[str, Any], key: str, where: str, base: Path | None) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"{where}.{key}: expected a list of paths")
    return tuple(_path(p, f"{where}.{key}[{i}]", base) for i, p in enumerate(value))


def _limits(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping of memory, cpu, pids")
    _known(raw, _LIMIT_KEYS, where)
    out: dict[str, Any] = {}
    if "memory" in raw:
        out["memory"] = parse_bytes(raw["memory"], f"{where}.memory")
    if "cpu" in raw:
        out["cpu"] = parse_cpu(raw["cpu"], f"{where}.cpu")
    if "pids" in raw:
        pids = raw["pids"]
        if isinstance(pids, bool) or not isinstance(pids, int) or pids < 1:
            raise ValueError(f"{where}.pids: expected a positive integer, got {pids!r}")
        out["pids"] = pids
    return out
