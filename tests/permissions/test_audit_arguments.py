"""What an audit record says a syscall asked for: its key arguments (names, ids, paths, keys,
a program's name), never content (values, bodies, data, prompts, env values, a command's
arguments, a URL's path and query). Unit tests over every declared request, then a real kernel."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentos import NotFound
from agentos.audit.arguments import requested
from agentos.cli.commands.audit import format_record
from agentos.protocol import Op
from agentos.protocol.requests import REQUESTS, decode_request

SECRET = "s3cr3t-Value"


def args_of(op: Op, payload: dict[str, Any]) -> dict[str, Any] | None:
    return requested(op, decode_request(op, msgspec.json.encode(payload)))


def test_spawn_records_its_program_and_env_names_not_values_or_arguments() -> None:
    got = args_of(Op.SPAWN, {"name": "worker", "command": ["curl", f"--token={SECRET}"], "cwd": "/srv",
                             "env": {"API_KEY": SECRET, "MODE": SECRET}, "sandboxed": True,
                             "capabilities": ["think", "message"], "llm": {"system": SECRET}})
    assert got == {"name": "worker", "cwd": "/srv", "sandboxed": True, "capabilities": ["think", "message"],
                   "program": "curl", "env": ["API_KEY", "MODE"]}


def test_content_never_reaches_a_record() -> None:
    cases: list[tuple[Op, dict[str, Any], dict[str, Any] | None]] = [
        (Op.STORE, {"key": "plan", "value": SECRET, "scope": "shared"}, {"key": "plan", "scope": "shared"}),
        (Op.CAS, {"key": "n", "value": SECRET, "expected": SECRET}, {"key": "n"}),
        (Op.SEND, {"to": "planner", "body": {"text": SECRET}}, {"to": "planner"}),
        (Op.BROADCAST, {"body": SECRET}, None),
        (Op.PUBLISH, {"topic": "team.news", "data": SECRET}, {"topic": "team.news"}),
        (Op.EXEC, {"name": "box", "argv": ["sh", "-c", f"echo {SECRET}"], "env": {"T": SECRET},
                   "stdin": SECRET}, {"name": "box", "program": "sh", "env": ["T"]}),
        (Op.EXEC, {"name": "box", "cmd": f"export T={SECRET}"}, {"name": "box"}),
        (Op.EXEC_INPUT, {"exec": "ab12", "data": SECRET}, {"exec": "ab12"}),
        (Op.HTTP, {"url": f"https://api.example.com:8443/v1/{SECRET}?key={SECRET}", "method": "POST",
                   "headers": {"Authorization": SECRET}, "body": SECRET},
         {"method": "POST", "host": "api.example.com:8443"}),
        (Op.HTTP, {"url": f"https://user:{SECRET}@example.org/?k={SECRET}"}, {"host": "example.org"}),
        (Op.FILE_WRITE, {"name": "box", "path": "notes.txt", "data": SECRET, "append": True},
         {"name": "box", "path": "notes.txt", "append": True}),
        (Op.FILE_DATA, {"handle": "1", "data": SECRET}, {"handle": "1"}),
        (Op.CONTEXT, {"op": "create", "id": "chat", "system": SECRET}, {"op": "create", "id": "chat"}),
        (Op.SET_PERMS, {"uid": 1000, "capabilities": ["message"]}, {"uid": 1000, "capabilities": ["message"]}),
        (Op.KILL, {"name": "worker", "grace": 5}, {"name": "worker", "grace": 5}),
        (Op.START, {"id": "0123456789ab"}, {"id": "0123456789ab"}),
    ]
    for op, payload, expected in cases:
        assert args_of(op, payload) == expected, op.name


def test_no_declared_request_leaks_a_string_it_was_given() -> None:
    # Each field of each request that can hold text holds the secret in turn: only fields that
    # identify what was asked may echo it.
    identifiers = {"name", "id", "to", "key", "path", "topic", "mailbox", "agent", "exec", "handle", "prefix",
                   "cwd", "new_id", "attach", "exposure", "model", "scope", "action", "status", "method",
                   "program", "capabilities", "egress", "topics", "op", "signal"}
    for op, cls in REQUESTS.items():
        for field in msgspec.inspect.type_info(cls).fields:  # type: ignore[attr-defined]
            for value in _texts(field.type):
                fields: dict[str, Any] = {other.name: value if other is field else None
                                          for other in msgspec.inspect.type_info(cls).fields}  # type: ignore[attr-defined]
                record = requested(op, cls(**fields))
                leaked = {key for key, shown in (record or {}).items() if SECRET in json.dumps(shown)}
                assert leaked <= identifiers, (op.name, field.name, leaked)


def _texts(kind: msgspec.inspect.Type) -> list[Any]:
    """The secret in each shape ``kind`` accepts: as a string, in a list, as a mapping's value."""
    inspect = msgspec.inspect
    if isinstance(kind, (inspect.StrType, inspect.AnyType)):
        return [SECRET, [SECRET], {"NAME": SECRET}] if isinstance(kind, inspect.AnyType) else [SECRET]
    if isinstance(kind, inspect.UnionType):
        return [value for member in kind.types for value in _texts(member)]
    if isinstance(kind, inspect.ListType):
        return [[value] for value in _texts(kind.item_type)]
    if isinstance(kind, inspect.DictType):
        return [{"NAME": value} for value in _texts(kind.value_type)]
    return []


def test_the_cli_shows_them() -> None:
    line = format_record({"ts": 0.5, "agent": "ab", "name": "worker", "uid": 0, "pid": 1, "op": "SPAWN",
                          "outcome": "ok", "latency_ms": 1.5,
                          "args": {"name": "helper", "program": "helper.py", "capabilities": ["think", "message"]}})
    assert line.endswith("SPAWN        ok                     1.500ms  name=helper program=helper.py "
                         "capabilities=think,message")


def test_a_real_kernel_records_what_each_call_asked(kernel, tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text("")
    client = kernel.client()
    client.spawn("quiet", str(script), sandboxed=False, args=[SECRET], env={"TOKEN": SECRET})
    client.wait("quiet", timeout=60)
    client.store("plan", SECRET)
    with pytest.raises(NotFound):
        client.send("nobody-listens", {"text": SECRET})
    with pytest.raises(NotFound):
        client.kill(id="ffffffffffff")
    records = {r["op"]: r for r in client.audit()}
    assert records["SPAWN"]["args"] == {"name": "quiet", "sandboxed": False, "network": False,
                                        "program": str(script), "env": ["TOKEN"]}
    assert records["STORE"]["args"] == {"scope": "own", "key": "plan"}
    assert records["SEND"]["args"] == {"to": "nobody-listens"}
    assert records["KILL"]["args"] == {"id": "ffffffffffff"} and records["KILL"]["outcome"] == "not_found"
    assert SECRET not in (kernel.state_dir / "audit.log").read_text()
