"""SPAWN payload checking, without a kernel."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentos.cgroups import Limits
from agentos.errors import InvalidArgument
from agentos.processes.request import SpawnRequest

from .conftest import agent


def test_seed_payload() -> None:
    request = SpawnRequest.parse({"name": "worker", "script": agent("sleeper"), "sandboxed": True,
                                  "network": False, "limits": {"memory": 256 * 1024 * 1024,
                                                               "max_pids": 32, "cpu_quota": 50000}})
    assert request.name == "worker" and request.script == agent("sleeper")
    assert request.argv == [sys.executable]
    assert request.limits == Limits(memory=256 * 1024 * 1024, pids=32, cpu=0.5)
    assert request.sandboxed and not request.network and not request.allow_degraded


def test_defaults_and_extensions() -> None:
    request = SpawnRequest.parse({"script": "agents/sleeper.py", "cwd": str(Path(agent("x")).parent.parent),
                                  "args": ["--fast"], "env": {"MODE": "test"}})
    assert request.name == "sleeper"  # from the file name
    assert request.script == agent("sleeper")
    assert request.argv == [sys.executable, "--fast"]
    assert request.env == {"MODE": "test"} and request.sandboxed


def test_command_is_resolved_in_path() -> None:
    request = SpawnRequest.parse({"command": ["sh", "-c", "true"], "env": {"PATH": "/usr/bin:/bin"}})
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
    ({"command": "sh", "name": "-dash"}, "not valid"),
    ({"command": "sh", "name": "x" * 65}, "not valid"),
    ({"command": "sh", "env": {"AGENTOS_AGENT_ID": "forged"}}, "set by the kernel"),
    ({"command": "sh", "env": {"A": 1}}, "must be a string"),
    ({"command": "sh", "env": {"1A": "x"}}, "not a valid variable"),
    ({"command": "sh", "args": "not-a-list"}, "list of strings"),
    ({"command": "sh", "sandboxed": "yes"}, "true or false"),
    ({"command": "sh", "limits": {"cpu": "fast"}}, "limits.cpu"),
    ({"command": "sh", "bogus": 1}, "unknown field"),
    ({"command": "sh", "sandboxed": False, "hostname": "box"}, "needs sandboxed"),
])
def test_bad_payloads(payload: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=message):
        SpawnRequest.parse(payload)
