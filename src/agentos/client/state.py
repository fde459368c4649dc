"""State requests for both clients, checked before they leave."""
from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument

#: ``cas(key, ABSENT, value)`` creates ``key`` only if it does not exist yet.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()

_SCOPES = ("own", "shared")


def _base(key: str | None, scope: str, agent: str | None) -> dict[str, Any]:
    if scope not in _SCOPES:
        raise InvalidArgument(f"scope must be 'own' or 'shared', got {scope!r}")
    args: dict[str, Any] = {"scope": scope}
    if key is not None:
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"key must be a non-empty string, got {key!r}")
        args["key"] = key
    if agent is not None:
        args["agent"] = agent
    return args


def store_request(key: str, value: Any, ttl: float | None, scope: str,
                  agent: str | None) -> dict[str, Any]:
    args = _base(key, scope, agent)
    args["value"] = value
    if ttl is not None:
        args["ttl"] = ttl
    return args


def key_request(key: str, scope: str, agent: str | None) -> dict[str, Any]:
    return _base(key, scope, agent)


def keys_request(prefix: str, limit: int, scope: str, agent: str | None) -> dict[str, Any]:
    args = _base(None, scope, agent)
    args.update(prefix=prefix, limit=limit)
    return args


def cas_request(key: str, expected: Any, value: Any, ttl: float | None, scope: str,
                agent: str | None) -> dict[str, Any]:
    args = store_request(key, value, ttl, scope, agent)
    if expected is not ABSENT:
        args["expected"] = expected
    return args
