"""Each name rule is written once (``protocol/requests.py``) and every gate uses it: a name one
gate refuses, every gate refuses, so a manifest never declares what SPAWN then turns down."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from agentos.cli.commands.cp import _split
from agentos.errors import InvalidArgument
from agentos.manifest import ManifestError, loads
from agentos.mcp.server_tools import _ENV as MCP_TOOL_ENV
from agentos.processes.exec import _env
from agentos.processes.request import HOST, SpawnRequest
from agentos.protocol import Op
from agentos.protocol.lifecycle import Status
from agentos.protocol.requests import ExecRequest, SpawnRequestWire, decode_request
from agentos.sandbox.templates import TemplateSettings

#: Names at and across every edge of the agent-name rule.
AGENT_NAMES = ["worker", "team.a-1", "x", "Under_score", "9lives", "a" * 60, "a" * 61, "-dash", ".hidden",
               "_lead", "two words", "a/b", "a:b", "trailing\n", "tab\t", "ünï", ""]
#: Hostnames: one DNS label, dots allowed, no ``_``.
HOSTNAMES = ["box", "box-1.lan", "b" * 63, "b" * 64, "my_host", "-box", "box\n", ""]
#: Environment variable names, the kernel's prefix included.
ENV_NAMES = ["PATH", "MY_VAR", "_x", "agentos_lower", "A" * 256, "A" * 257, "1A", "A-B", "A\n", "",
             "AGENTOS_FD", "AGENTOS_AGENT_ID", "AGENTOS_SOCKET", "AGENTOS_ANYTHING_LATER"]


def spawn(**fields: Any) -> bool:
    """Whether the kernel takes an admin's SPAWN of ``sh`` with ``fields``."""
    try:
        wire = decode_request(Op.SPAWN, json.dumps({"command": "sh", "sandboxed": True, **fields}).encode())
        SpawnRequest.parse(cast(SpawnRequestWire, wire), HOST)
    except InvalidArgument:
        return False
    return True


def manifest(agent_name: str = "a", replicas: int = 1, **agent: Any) -> bool:
    """Whether a manifest declaring that agent loads (JSON is YAML, so any name can be written)."""
    text = json.dumps({"agents": {agent_name: {"command": "sh", "replicas": replicas, **agent}}})
    try:
        loads(text, Path("/tmp/manifest.yaml"))
    except ManifestError:
        return False
    return True


def cli_copy(name: str) -> bool:
    """Whether ``agentos cp NAME:PATH`` reads NAME as an agent (else the whole is a local path)."""
    return _split(f"{name}:/etc/hostname") == (name, "/etc/hostname")


def execute(**env: str) -> bool:
    """Whether the kernel takes an EXEC with ``env``."""
    try:
        _env(cast(ExecRequest, decode_request(Op.EXEC, json.dumps({"name": "a", "argv": ["true"],
                                                                    "env": env}).encode())))
    except InvalidArgument:
        return False
    return True


def template(**env: str) -> bool:
    """Whether the kernel configuration takes a sandbox template with ``env``."""
    try:
        TemplateSettings.from_section({"templates": {"t": {"env": env}}})
    except ValueError:
        return False
    return True


def verdicts(gates: dict[str, Callable[[str], bool]], names: list[str]) -> dict[str, dict[str, bool]]:
    return {name: {gate: check(name) for gate, check in gates.items()} for name in names}


def agreed(table: dict[str, dict[str, bool]]) -> dict[str, bool]:
    """Each name's one verdict; fails naming the names the gates disagree on."""
    split = {name: verdict for name, verdict in table.items() if len(set(verdict.values())) > 1}
    assert not split, f"gates disagree: {split}"
    return {name: next(iter(verdict.values())) for name, verdict in table.items()}


def test_an_agent_name_means_the_same_to_spawn_the_manifest_and_the_cli() -> None:
    verdict = agreed(verdicts({"SPAWN": lambda n: spawn(name=n), "manifest": lambda n: manifest(n),
                               "cli cp": cli_copy}, AGENT_NAMES))
    assert [name for name, ok in verdict.items() if ok] == ["worker", "team.a-1", "x", "Under_score", "9lives",
                                                            "a" * 60]


def test_a_replica_runs_under_a_name_spawn_takes() -> None:
    # name-1 ... name-N are the names SPAWN sees: 59 characters and "-1" is one too many.
    assert manifest("a" * 58, replicas=2) and spawn(name="a" * 58 + "-2")
    assert not manifest("a" * 59, replicas=2) and not spawn(name="a" * 59 + "-1")


def test_a_hostname_means_the_same_to_spawn_and_the_manifest() -> None:
    verdict = agreed(verdicts({"SPAWN": lambda h: spawn(hostname=h),
                               "manifest": lambda h: manifest(sandbox={"hostname": h})}, HOSTNAMES))
    assert [name for name, ok in verdict.items() if ok] == ["box", "box-1.lan", "b" * 63]


def test_an_env_name_means_the_same_to_spawn_exec_the_manifest_and_a_template() -> None:
    # A value fit for each name (SPAWN looks ``sh`` up on the PATH it is given).
    value = "/usr/bin:/bin"
    verdict = agreed(verdicts({"SPAWN": lambda n: spawn(env={n: value}), "EXEC": lambda n: execute(**{n: value}),
                               "manifest": lambda n: manifest(env={n: value}),
                               "template": lambda n: template(**{n: value})}, ENV_NAMES))
    # Every AGENTOS_ name is the kernel's, set by it or not (yet): the prefix, not a list, is reserved.
    assert [name for name, ok in verdict.items() if ok] == ["PATH", "MY_VAR", "_x", "agentos_lower", "A" * 256]


def test_an_mcp_tools_env_schema_refuses_no_name_spawn_takes() -> None:
    """The schema is a tool call's first gate (SPAWN or EXEC checks the names again after it):
    a name SPAWN takes, the schema takes too; it had its own rule, which refused 129-256 characters."""
    def schema(name: str) -> bool:
        try:
            jsonschema.validate({name: "v"}, MCP_TOOL_ENV)
        except jsonschema.ValidationError:
            return False
        return True

    taken = [name for name in ENV_NAMES if spawn(env={name: "/usr/bin:/bin"})]
    assert "A" * 256 in taken and [name for name in taken if not schema(name)] == []
    assert not schema("A" * 257) and not schema("1A") and not schema("A-B")


@pytest.mark.parametrize("name", ["worker\n", "AGENTOS_FD\n"])
def test_no_rule_lets_a_trailing_newline_through(name: str) -> None:
    assert not spawn(name=name) and not manifest(name) and not spawn(env={name: "v"})


def test_list_filters_by_exactly_the_statuses_list_shows() -> None:
    # The wire's Literal spells the statuses again, for type checkers: it must not drift from Status.
    for status in (*Status.ALL, Status.PENDING):
        decode_request(Op.LIST, json.dumps({"status": status}).encode())
    with pytest.raises(InvalidArgument):
        decode_request(Op.LIST, json.dumps({"status": "given_up"}).encode())
