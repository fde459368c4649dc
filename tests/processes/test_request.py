"""SPAWN payload checking, without a kernel: the wire schema, then resolution on the host."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from agentos.cgroups import Limits
from agentos.errors import InvalidArgument
from agentos.processes.request import HOST, SpawnRequest
from agentos.protocol import Op
from agentos.protocol.requests import SpawnRequestWire, decode_request

from .conftest import agent


def parse(payload: dict[str, Any]) -> SpawnRequest:
    """What the kernel does with an admin's SPAWN payload."""
    wire = cast(SpawnRequestWire, decode_request(Op.SPAWN, json.dumps(payload).encode()))
    return SpawnRequest.parse(wire, HOST)


def test_seed_payload() -> None:
    request = parse({"name": "worker", "script": agent("sleeper"), "sandboxed": True,
                                  "network": False, "limits": {"memory": 256 * 1024 * 1024,
                                                               "max_pids": 32, "cpu_quota": 50000}})
    assert request.name == "worker" and request.script == agent("sleeper")
    assert request.argv == [sys.executable]
    assert request.limits == Limits(memory=256 * 1024 * 1024, pids=32, cpu=0.5)
    assert request.sandboxed and not request.network and not request.allow_degraded


def test_defaults_and_extensions() -> None:
    request = parse({"script": "agents/sleeper.py", "cwd": str(Path(agent("x")).parent.parent),
                                  "args": ["--fast"], "env": {"MODE": "test"}})
    assert request.name == "sleeper"  # from the file name
    assert request.script == agent("sleeper")
    assert request.argv == [sys.executable, "--fast"]
    assert request.env == {"MODE": "test"} and request.sandboxed


def test_command_is_resolved_in_path() -> None:
    request = parse({"command": ["sh", "-c", "true"], "env": {"PATH": "/usr/bin:/bin"}})
    assert Path(request.argv[0]).name == "sh" and Path(request.argv[0]).is_absolute()
    assert request.argv[1:] == ["-c", "true"] and request.script is None
    assert request.name == "sh"


@pytest.mark.parametrize("payload, message", [
    ({}, "exactly one of script"),
    ({"script": "a.py", "command": "sh"}, "exactly one of script"),
    ({"script": "relative.py"}, "relative"),
    ({"script": "/nonexistent/a.py"}, "does not exist"),
    ({"command": []}, "non-empty list"),
    ({"command": "sh", "cwd": "relative"}, "absolute"),
    ({"command": "/etc/passwd"}, "not an executable"),
    ({"command": "sh", "name": "-dash"}, r"matching regex .* at `\$.name`"),
    # The manifest's rule: 60 characters at most.
    ({"command": "sh", "name": "x" * 61}, r"matching regex .* at `\$.name`"),
    ({"command": "sh", "env": {"AGENTOS_AGENT_ID": "forged"}}, "set by the kernel"),
    ({"command": "sh", "env": {"A": 1}}, r"Expected `str`.* at `\$.env\[...\]`"),
    ({"command": "sh", "env": {"1A": "x"}}, r"matching regex"),
    ({"command": "sh", "args": "not-a-list"}, r"Expected `array \| null`"),
    ({"command": "sh", "sandboxed": "yes"}, r"Expected `bool \| null`, got `str` - at `\$.sandboxed`"),
    ({"command": "sh", "limits": {"cpu": "fast"}}, r"limits.cpu"),
    ({"command": "sh", "limits": {"cpu": 1e300}}, r"limits.cpu"),
    ({"command": "sh", "limits": {"memory": 10**30}}, r"limits.memory"),
    ({"command": "sh", "capabilities": [["admin"]]}, r"at `\$.capabilities\[0\]`"),
    ({"command": "sh", "bogus": 1}, "unknown field `bogus`"),
    ({"command": "sh", "sandboxed": False, "hostname": "box"}, "needs sandboxed"),
])
def test_bad_payloads(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(payload)
