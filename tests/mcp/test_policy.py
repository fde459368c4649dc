"""Tool allowlists and the mcp configuration, without a kernel."""
from __future__ import annotations

import pytest

from agentos.errors import InvalidArgument, PermissionDenied
from agentos.llm.request import parse_json
from agentos.mcp.config import McpConfig, parse_server
from agentos.mcp.policy import ToolPolicy, ToolRule, check_narrower, parse_rules


@pytest.mark.parametrize(("rule", "name", "covered"), [
    ("fs.read_file", "fs.read_file", True), ("fs.*", "fs.read_file", True), ("fs.*", "fs.r*", True),
    ("fs.r*", "fs.*", False), ("fs.read_file", "fs.*", False), ("fs.*", "fsx.read", False),
    ("*.read_*", "fs.read_*", True), ("fs.read_*", "*.read_*", False)])
def test_a_rule_covers_a_name_or_a_narrower_pattern(rule: str, name: str, covered: bool) -> None:
    assert ToolRule(rule).covers(name) is covered


def test_a_child_may_only_narrow() -> None:
    parent = parse_rules(["fs.read_*", {"tool": "notes.*", "approve": True}])
    check_narrower(parse_rules(["fs.read_file", "notes.add"]), parent)
    with pytest.raises(PermissionDenied, match=r"tools\[1\]: 'fs\.\*'"):
        check_narrower(parse_rules(["notes.add", "fs.*"]), parent)
    with pytest.raises(PermissionDenied):
        check_narrower(parse_rules(["fs.read_file"]), None)


def test_every_ancestor_must_allow_and_any_may_ask_for_approval() -> None:
    child, parent = parse_rules(["notes.*"]), parse_rules([{"tool": "notes.write_*", "approve": True}, "notes.add"])
    policy = ToolPolicy((child, parent), {"notes": ("delete_*",)})
    assert policy.allows("notes.add") and policy.allows("notes.write_note")
    assert not policy.allows("notes.read_note"), "the parent lacks it, whatever the child's list says"
    assert policy.needs_approval("notes.write_note"), "a child cannot drop its parent's approval"
    assert not policy.needs_approval("notes.add")
    assert ToolPolicy(None, {"notes": ("delete_*",)}).needs_approval("notes.delete_all"), "the server's own"


@pytest.mark.parametrize(("raw", "message"), [
    (["fs"], r"tools\[0\]: 'fs' is not a tool"),
    ([{"tool": "fs.x", "approve": "yes"}], r"tools\[0\]\.approve"),
    ([{"tool": "fs.x", "why": 1}], r"tools\[0\]: unknown key"),
    ("fs.x", "expected a list")])
def test_malformed_tools_name_the_entry(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(raw)


@pytest.mark.parametrize(("section", "message"), [
    ({"servers": {"fs": {}}}, r"mcp_servers\.fs\.command"),
    ({"servers": {"a b": {"command": ["x"]}}}, r"mcp_servers\.a b: a server's name"),
    ({"servers": {"fs": {"command": ["x"], "transport": "http"}}}, r"mcp_servers\.fs\.transport"),
    ({"servers": {"fs": {"command": ["x"], "writable_paths": ["rel"]}}},
     r"writable_paths\[0\]: 'rel' must be an absolute"),
    ({"servers": {"fs": {"command": ["x"], "limits": {"disk": 1}}}}, r"mcp_servers\.fs\.limits: unknown"),
    ({"servers": {"fs": {"command": ["x"], "restart": {"policy": "sometimes"}}}}, r"mcp_servers\.fs\.restart\.policy"),
    ({"max_steps": 0}, r"mcp\.max_steps"), ({"approval_timeout": "0s"}, r"mcp\.approval_timeout"),
    ({"colour": 1}, r"mcp: unknown key")])
def test_a_config_error_names_its_key(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        McpConfig.from_section(section)


def test_a_string_command_is_split_and_defaults_are_secure() -> None:
    spec = parse_server("fs", {"command": "npx -y '@modelcontextprotocol/server-filesystem' /data"})
    assert spec.command == ("npx", "-y", "@modelcontextprotocol/server-filesystem", "/data")
    assert spec.network is False and spec.restart.policy == "on-failure" and spec.approve == ()


@pytest.mark.parametrize("request_", [{"prompt": "x", "tools": "all"},
                                      {"prompt": "x", "tools": "mcp", "functions": [{"name": "f"}]}])
def test_think_tools_takes_only_mcp_alone(request_: dict) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_json(request_)
    assert caught.value.details.get("field") == "tools"
