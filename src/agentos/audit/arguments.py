"""What an audit record says a syscall asked for: its key arguments, never its content.

Each syscall names the fields that say *what* was asked: agent names and ids, paths, state
keys, mailbox and topic names, capability names, a program's name. Never a field that carries
content or may carry a secret: message bodies, stored values, prompts, file data, environment
values, a command's arguments (a token on a command line), a URL's path and query (API keys
travel there). Only the decoded request's attributes are read, so a record costs a few
getattrs and never parses a payload; a syscall without a declared request (THINK, COUNT)
records none.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from msgspec import UNSET

from ..protocol import Op
from ..protocol.requests import Request

#: Longest string kept (paths and names are bounded by the protocol, but a record stays small).
_TEXT = 256
#: Most items of a list kept (capabilities, topics, egress domains).
_ITEMS = 32
#: Attribute -> name on the wire, where the two differ.
_WIRE = {"op_": "op", "listing": "list"}

_REF = ("id", "name")
_FILE = ("id", "name", "path")
_STATE = ("scope", "agent", "key", "ttl")

#: Per opcode, the fields recorded as they are.
_FIELDS: dict[int, tuple[str, ...]] = {
    Op.CONTEXT: ("op_", "id", "new_id"),
    Op.EMBED: ("model",),
    Op.SPAWN: ("name", "project", "cwd", "sandboxed", "network", "capabilities", "egress", "timeout",
               "idle_timeout"),
    Op.KILL: (*_REF, "grace"),
    Op.LIST: ("status", "name", "project"),
    Op.WAIT: (*_REF, "until"),
    Op.LOGS: (*_REF, "follow"),
    Op.EXEC: (*_REF, "attach", "background", "listing"),
    Op.EXEC_INPUT: ("exec", "eof"),
    Op.EXEC_SIGNAL: ("exec", "signal"),
    Op.EXEC_RESIZE: ("exec",),
    Op.PAUSE: _REF,
    Op.RESUME: _REF,
    Op.START: _REF,
    Op.EXPOSE: (*_REF, "port", "tcp", "listing"),
    Op.UNEXPOSE: ("exposure",),
    Op.PURGE: ("project",),
    Op.VOLUMES: ("action", "name", "project", "uid"),
    Op.APPROVALS: ("action", "id"),
    Op.FILE_READ: _FILE,
    Op.FILE_WRITE: (*_FILE, "append", "offset"),
    Op.FILE_LIST: _FILE,
    Op.FILE_STAT: _FILE,
    Op.FILE_MKDIR: _FILE,
    Op.FILE_REMOVE: (*_FILE, "recursive"),
    Op.FILE_RENAME: (*_FILE, "to"),
    Op.FILE_UPLOAD: _FILE,
    Op.FILE_DOWNLOAD: _FILE,
    Op.FILE_WATCH: _FILE,
    Op.FILE_DATA: ("handle",),
    Op.SEND: ("to",),
    Op.RECV: ("name",),
    Op.REGISTER: ("name",),
    Op.ACK: ("name", "id"),
    Op.DEAD_LETTERS: ("action", "mailbox", "name"),
    Op.SUBSCRIBE: ("topics",),
    Op.UNSUBSCRIBE: ("subscription",),
    Op.PUBLISH: ("topic",),
    Op.STORE: _STATE,
    Op.FETCH: _STATE[:3],
    Op.DELETE: _STATE[:3],
    Op.KEYS: ("scope", "agent", "prefix"),
    Op.CAS: _STATE,
    Op.GET_PERMS: ("agent",),
    Op.SET_PERMS: ("agent", "uid", "capabilities"),
    Op.HTTP: ("method",),
    Op.AUDIT: ("agent", "follow"),
}


def _program(request: Any) -> dict[str, Any]:
    """SPAWN's and EXEC's program, without its arguments; the names of the variables it sets."""
    found: dict[str, Any] = {}
    command = getattr(request, "script", None) or getattr(request, "command", None) or getattr(request, "argv", None)
    if isinstance(command, list):
        command = command[0] if command else None
    if isinstance(command, str):
        found["program"] = command[:_TEXT]
    env = getattr(request, "env", None)
    if isinstance(env, dict) and env:
        found["env"] = sorted(env)[:_ITEMS]
    return found


def _host(request: Any) -> dict[str, Any]:
    """HTTP's destination host and port: the path and query may carry keys."""
    try:
        parts = urlsplit(request.url)
        return {"host": f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)}
    except ValueError:
        return {}


_DERIVED: dict[int, Callable[[Any], dict[str, Any]]] = {Op.SPAWN: _program, Op.EXEC: _program, Op.HTTP: _host}


def requested(op: int, request: Request | None) -> dict[str, Any] | None:
    """The key arguments of a decoded request (None if it has none worth recording)."""
    if request is None:
        return None
    fields = _FIELDS.get(op)
    if fields is None:
        return None
    found: dict[str, Any] = {}
    for field in fields:
        value = getattr(request, field, None)
        if value is None or value is UNSET:
            continue
        if isinstance(value, str):
            value = value[:_TEXT]
        elif isinstance(value, list):
            value = [item[:_TEXT] if isinstance(item, str) else item for item in value[:_ITEMS]]
        elif not isinstance(value, (bool, int, float)):
            continue  # a nested object: never recorded whole
        found[_WIRE.get(field, field)] = value
    derive = _DERIVED.get(op)
    if derive is not None:
        found.update(derive(request))
    return found or None
