"""Tool allowlists: which MCP tools an agent's THINK may call, and which need a human.

An agent's ``tools`` (SPAWN, a manifest's ``agents.<name>.tools``) lists ``server.tool`` names
and patterns whose ``*`` matches any run of characters, each plain or ``{tool, approve: true}``.
Lists narrow down the spawn tree: SPAWN refuses an entry its spawner's list does not cover, and a
call is allowed only if every agent from the caller up to its root allows it, so a child never
holds a tool its parent lacks. A call needs approval if any of those lists, or the server's own
``approve``, marks a rule covering it: a child cannot drop its parent's approval either.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from ..errors import InvalidArgument, PermissionDenied
from ..protocol.requests import TOOL_PATTERN, ToolRuleWire

_TOOL = re.compile(TOOL_PATTERN)


@dataclass(frozen=True)
class ToolRule:
    pattern: str
    approve: bool = False

    def covers(self, name: str) -> bool:
        """Whether this rule matches the tool ``name``, or every tool the pattern ``name`` does.

        Patterns hold only ``*``, so a pattern read as plain text matches ours only if each of
        its stars falls inside one of ours: all it matches, ours does.
        """
        return fnmatch.fnmatchcase(name, self.pattern)


def rules_from_wire(raw: Any) -> tuple[ToolRule, ...] | None:
    """SPAWN's ``tools`` (decoded) as rules; None when absent (no tools at all)."""
    if raw is UNSET or raw is None:
        return None
    return tuple(ToolRule(r.tool, r.approve is True) if isinstance(r, ToolRuleWire) else ToolRule(r)
                 for r in raw)


def parse_rules(raw: Any, where: str = "tools") -> tuple[ToolRule, ...]:
    """A manifest's ``tools`` (strings or ``{tool, approve}``); ValueError naming the entry."""
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of tool names such as [fs.read_file, 'search.*']")
    rules = []
    for index, item in enumerate(raw):
        entry = f"{where}[{index}]"
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"tool", "approve"})
            if unknown:
                raise ValueError(f"{entry}: unknown key(s) {unknown}; known: tool, approve")
            pattern, approve = item.get("tool"), item.get("approve", False)
            if not isinstance(approve, bool):
                raise ValueError(f"{entry}.approve: expected true or false")
        else:
            pattern, approve = item, False
        if not (isinstance(pattern, str) and _TOOL.match(pattern)):
            raise ValueError(f"{entry}: {pattern!r} is not a tool: write server.tool or server.* "
                             "(letters, digits, _ . : - and *)")
        rules.append(ToolRule(pattern, approve))
    return tuple(rules)


def to_wire(rules: Iterable[ToolRule]) -> list[Any]:
    return [{"tool": r.pattern, "approve": True} if r.approve else r.pattern for r in rules]


def check_narrower(child: Sequence[ToolRule], parent: Sequence[ToolRule] | None) -> None:
    """PermissionDenied unless each of the child's rules is covered by one of its parent's."""
    for index, rule in enumerate(child):
        if parent is None or not any(p.covers(rule.pattern) for p in parent):
            raise PermissionDenied(f"tools[{index}]: {rule.pattern!r} is not within the spawner's "
                                   "tools (a child never gets a tool its parent lacks)",
                                   field=f"tools[{index}]", tool=rule.pattern)


def check_servers(rules: Sequence[ToolRule], servers: Iterable[str]) -> None:
    """InvalidArgument for a rule naming a server this kernel does not run."""
    known = set(servers)
    for index, rule in enumerate(rules):
        server = rule.pattern.split(".", 1)[0]
        if server not in known:
            raise InvalidArgument(f"tools[{index}]: no MCP server {server!r} on this kernel "
                                  f"(servers: {', '.join(sorted(known)) or 'none'})",
                                  field=f"tools[{index}]")


@dataclass(frozen=True)
class ToolPolicy:
    """What one caller may call: the allowlists from it up to its root, and the servers' approvals.

    ``chain`` is None for an admin outside any agent (every tool); an empty list inside it
    means no tools.
    """

    chain: tuple[tuple[ToolRule, ...], ...] | None
    server_approvals: dict[str, tuple[str, ...]]

    def allows(self, tool: str) -> bool:
        if self.chain is None:
            return True
        return all(any(r.covers(tool) for r in rules) for rules in self.chain)

    def needs_approval(self, tool: str) -> bool:
        server, _, name = tool.partition(".")
        if any(fnmatch.fnmatchcase(name, p) for p in self.server_approvals.get(server, ())):
            return True
        return any(r.approve and r.covers(tool) for rules in (self.chain or ()) for r in rules)
