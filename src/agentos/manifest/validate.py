"""Strict validation: a composed manifest to a :class:`Manifest`, or every error at once.

The walk follows :mod:`.schema`: unknown keys (with a "did you mean"), wrong
types and bad units are found per value; then each section's options are checked
against each other (script and command both set, writable paths without a
sandbox ...), and finally the agents against each other (unknown or cyclic
``depends_on``, clashing names). Nothing stops at the first error.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .. import units
from ..egress.allowlist import ENTRY_FORMS, parse_entry
from ..llm.request import MAX_CHAIN, model_chain
from ..mcp.config import resolve_servers
from ..mcp.policy import parse_rules
from ..processes.request import MIN_WORKSPACE
from ..processes.volumes import path_problem
from ..protocol.requests import (
    AGENT_NAME_PATTERN,
    ENV_NAME_PATTERN,
    HOSTNAME_PATTERN,
    LABEL_PATTERN,
    MAX_AMOUNT,
    MAX_GROUP,
    MAX_LABEL,
    MAX_LABELS,
    PROJECT_PATTERN,
    RESERVED_ENV_PREFIX,
    TEMPLATE_NAME_PATTERN,
    VOLUME_NAME_PATTERN,
)
from ..sandbox.mounts import inside
from ..sandbox.spec import WORKSPACE_PATH
from ..sandbox.templates import TemplateSettings, absolute_paths
from ..volume_notation import parse_short_volume
from . import schema
from .errors import ManifestError, Mark, Problem
from .loader import ListNode, MapNode, Node, Scalar
from .model import (
    AgentLLM,
    AgentSpec,
    KernelConnections,
    KernelLLM,
    KernelSection,
    Limits,
    Manifest,
    Placement,
    PlacementGroup,
    Readiness,
    Restart,
    Sandbox,
    Volume,
)
from .schema import Field, Section, Type

_NAME = re.compile(AGENT_NAME_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_PROJECT = re.compile(PROJECT_PATTERN)
_TEMPLATE = re.compile(TEMPLATE_NAME_PATTERN)
_VOLUME = re.compile(VOLUME_NAME_PATTERN)
_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
#: The keys of a volume written as a mapping, and how its size is read.
_VOLUME_KEYS = ("name", "path", "size", "read_only")
#: What a scalar of the manifest is read as (the kinds ``scalar`` is asked for).
_V = TypeVar("_V")
_VOLUME_SIZE = Field("size", Type.SIZE, "The volume's quota, if this agent creates it.")


class _Invalid(Exception):
    """A value that cannot be converted; already recorded as a problem."""


@dataclass
class _Parsed:
    """One section as read: converted values, and where each key and value was written."""

    mark: Mark
    values: dict[str, Any] = field(default_factory=dict)
    key_marks: dict[str, Mark] = field(default_factory=dict)
    value_marks: dict[str, Mark] = field(default_factory=dict)
    #: For list values: the mark of each item.
    item_marks: dict[str, list[Mark]] = field(default_factory=dict)

    def given(self, key: str) -> bool:
        """Written in the file (whether or not its value was valid)."""
        return key in self.key_marks


def validate(root: Node | None, file: str, path: Path) -> Manifest:
    """Check the composed manifest ``root`` read from ``path``; raises ManifestError listing every problem."""
    return _Validator(file, Path(os.path.abspath(path))).manifest(root)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _leaf(where: str) -> str:
    """The key a dotted path ends in: ``agents.a.args[2]`` -> ``args``."""
    return where.rsplit(".", 1)[-1].split("[", 1)[0]


def _describe(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, ListNode):
        return "a list"
    value = node.value
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"a {type(value).__name__} ({value})"


def _suggest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return close[0] if close else None


class _Validator:
    def __init__(self, file: str, path: Path) -> None:
        self.file = file
        self.manifest_path = path
        self.base_dir = path.parent
        self.problems: list[Problem] = []
        #: Placement sections (by where) that name a group, with the group: sized once every agent is read.
        self.group_members: dict[str, tuple[str, _Parsed]] = {}

    def error(self, mark: Mark, message: str, fix: str) -> None:
        self.problems.append(Problem(mark, message, fix))

    def invalid(self, mark: Mark, message: str, fix: str) -> _Invalid:
        self.error(mark, message, fix)
        return _Invalid()

    # --- the document -------------------------------------------------------------------

    def manifest(self, root: Node | None) -> Manifest:
        start = Mark(self.file, 1, 1)
        if root is None:
            raise ManifestError([Problem(start, "the manifest is empty",
                                         "declare at least one agent: 'agents: {hello: {script: hello.py}}'")])
        parsed = self.section(root, schema.MANIFEST, "", start)
        if self.problems or parsed is None:
            raise ManifestError(self.problems)
        if "mcp_servers" in parsed.values:
            try:
                parsed.values["mcp_servers"] = resolve_servers(parsed.values["mcp_servers"], self.base_dir)
            except ValueError as exc:
                raise ManifestError([Problem(parsed.value_marks["mcp_servers"], str(exc),
                                             "fix it (docs/mcp.md); relative paths start at the "
                                             "manifest's directory")]) from None
        return Manifest(path=self.manifest_path, **parsed.values)

    # --- sections -----------------------------------------------------------------------

    def section(self, node: Node, section: Section, where: str, owner: Mark) -> _Parsed | None:
        """Convert a mapping of ``section``'s keys; ``owner`` is where "missing key" errors point."""
        if not isinstance(node, MapNode):
            self.error(node.mark, f"{where or 'the manifest'}: expected a mapping, got {_describe(node)}",
                       f"write 'key: value' lines indented under {_leaf(where)}:"
                       if where else "start the file with 'agents:'")
            return None
        parsed = _Parsed(node.mark)
        for key, entry in node.entries.items():
            f = section.get(key)
            if f is None:
                if section is not schema.MANIFEST or not key.startswith("x-"):
                    self.unknown_key(section, where, key, entry.key_mark)
                continue
            parsed.key_marks[key] = entry.key_mark
            parsed.value_marks[key] = entry.value.mark
            try:
                parsed.values[key] = self.convert(f, entry.value, _join(where, key), entry.key_mark, parsed)
            except _Invalid:
                pass
        for f in section.fields:
            if f.required and not parsed.given(f.key):
                self.error(owner, f"{where or 'the manifest'}: missing required key {f.key!r}",
                           f"add '{f.key}:' ({f.doc[0].lower() + f.doc[1:]})")
        return parsed

    def unknown_key(self, section: Section, where: str, key: str, mark: Mark) -> None:
        place = f"{where}: " if where else ""
        if key in section.refused:
            self.error(mark, f"{place}{key!r} is not allowed here", section.refused[key])
            return
        children = [f for f in section.fields if f.section is not None]
        home = next((f.key for f in children if f.section.get(key) is not None), None)  # type: ignore[union-attr]
        if home is not None:
            self.error(mark, f"{place}unknown key {key!r}", f"move it under '{home}:'")
            return
        nested = [f"{f.key}.{k}" for f in children for k in f.section.keys]  # type: ignore[union-attr]
        close = _suggest(key, section.keys) or _suggest(key, [n.split(".", 1)[1] for n in nested], cutoff=0.75)
        if close and close not in section.keys:
            close = next(n for n in nested if n.endswith("." + close))
        if close:
            self.error(mark, f"{place}unknown key {key!r}", f"did you mean {close!r}?")
        else:
            self.error(mark, f"{place}unknown key {key!r}", f"remove it; known keys: {', '.join(section.keys)}")

    # --- values -------------------------------------------------------------------------

    def convert(self, f: Field, node: Node, where: str, key_mark: Mark, parsed: _Parsed) -> Any:
        if f.type is Type.SECTION:
            assert f.section is not None
            inner = self.section(node, f.section, where, key_mark)
            if inner is None:
                raise _Invalid()
            return _FINISH[f.section.path](self, inner, where)
        if f.type is Type.AGENTS:
            return self.agents(node, where)
        if f.type is Type.TOOLS:
            try:
                return parse_rules(_plain(node), where)
            except ValueError as exc:
                raise self.invalid(node.mark, str(exc), "list tools as server.tool, server.* or "
                                   "{tool: server.tool, approve: true}") from None
        if f.type is Type.VOLUMES:
            items = self.items(node, where)
            parsed.item_marks[f.key] = [item.mark for item in items]
            return self.volumes(items, where)
        if f.type in (Type.PATHS, Type.STRINGS, Type.CHOICES, Type.NAMES, Type.HOSTS):
            items = self.items(node, where)
            parsed.item_marks[f.key] = [item.mark for item in items]
            return self.list_value(f, items, where)
        if f.unlimited and isinstance(node, Scalar) and node.value == schema.UNLIMITED:
            return None
        if f.type is Type.SETTINGS and isinstance(node, MapNode):
            parsed.item_marks[f.key] = [entry.key_mark for entry in node.entries.values()]
        return _CONVERTERS[f.type](self, f, node, where)

    def scalar(self, node: Node, where: str, kinds: tuple[type[_V], ...], expected: str, example: str) -> _V:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(node, Scalar) and isinstance(value, kinds) and not (
                isinstance(value, bool) and bool not in kinds):
            return value
        fix = f"write {expected}, e.g. {_leaf(where)}: {example}"
        if isinstance(value, bool) and str in kinds:
            fix = f"quote it: '{str(value).lower()}'; YAML reads bare yes/no/on/off/true/false as booleans"
        elif isinstance(value, str) and bool in kinds and value.lower() in ("true", "false"):
            fix = f"write {value.lower()} without quotes"
        raise self.invalid(node.mark, f"{where}: expected {expected}, got {_describe(node)}", fix)

    def string(self, f: Field, node: Node, where: str) -> str:
        value = self.scalar(node, where, (str,), "a string", "'text'")
        if not value.strip():
            raise self.invalid(node.mark, f"{where}: must not be empty", f"give a value or remove {f.key!r}")
        if where == "name" and not _PROJECT.match(value):
            raise self.invalid(node.mark, f"name: {value!r} is not a valid project name",
                               "use lower-case letters, digits and '-', at most 63, starting with a "
                               "letter or digit")
        if f.key == "template" and not _TEMPLATE.match(value):
            raise self.invalid(node.mark, f"{where}: {value!r} is not a valid template name",
                               "use letters, digits, '-', '_' and '.', at most 63, starting with a letter or digit")
        if f.key == "hostname" and not _HOSTNAME.match(value):
            raise self.invalid(node.mark, f"{where}: {value!r} is not a valid hostname",
                               "use letters, digits, '-' and '.', at most 63, starting with a letter or digit")
        return value

    def volume_name(self, f: Field, node: Node, where: str) -> str:
        return self.checked_volume_name(self.scalar(node, where, (str,), "a volume name", "data"), node.mark, where)

    def checked_volume_name(self, value: str, mark: Mark, where: str) -> str:
        if not _VOLUME.match(value):
            raise self.invalid(mark, f"{where}: {value!r} is not a valid volume name",
                               "use letters, digits, '_', '.' and '-', at most 63, starting with a letter or digit")
        return value

    def boolean(self, f: Field, node: Node, where: str) -> bool:
        return self.scalar(node, where, (bool,), "true or false", "true")

    def number(self, f: Field, node: Node, where: str) -> int | float:
        integer = f.type is Type.INT
        kinds: tuple[type[int | float], ...] = (int,) if integer else (int, float)
        suffix = " or 'unlimited'" if f.unlimited else ""
        value = self.scalar(node, where, kinds, ("an integer" if integer else "a number") + suffix,
                            str(f.default if f.default is not None else (f.minimum or 1)))
        self.check_range(f, value, node, where)
        return value

    def check_range(self, f: Field, value: float, node: Node, where: str) -> None:
        low, high = f.minimum, f.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f"exactly {low:g}" if low == high else
                      f"at least {low:g}" if high is None else
                      f"at most {high:g}" if low is None else f"between {low:g} and {high:g}")
            raise self.invalid(node.mark, f"{where}: must be {bounds}, got {value:g}",
                               f"set {f.key} to a value {bounds}")

    def unit(self, f: Field, node: Node, where: str) -> Any:
        parse, example = _UNITS[f.type]
        if not isinstance(node, Scalar) or node.value is None or isinstance(node.value, bool):
            suffix = " or 'unlimited'" if f.unlimited else ""
            raise self.invalid(node.mark, f"{where}: expected a {f.type.value}{suffix}, got {_describe(node)}",
                               f"write e.g. {f.key}: {example}")
        try:
            value = parse(node.value, where)
        except ValueError as exc:
            fix = f"write e.g. {f.key}: {example}" + (" or 'unlimited'" if f.unlimited else "")
            raise self.invalid(node.mark, str(exc), fix) from None
        self.check_range(f, value, node, where)
        return value

    def choice(self, f: Field, node: Node, where: str) -> str:
        options = ", ".join(f.choices)
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            raise self.invalid(node.mark, f"{where}: expected one of {options}, got {_describe(node)}",
                               f"write one of {options}")
        if node.value not in f.choices:
            close = _suggest(node.value, f.choices)
            raise self.invalid(node.mark, f"{where}: {node.value!r} is not one of {options}",
                               f"did you mean {close!r}?" if close else f"write one of {options}")
        return node.value

    def path(self, f: Field, node: Node, where: str) -> Path:
        text = self.scalar(node, where, (str,), "a path", "./data")
        if not text.strip():
            raise self.invalid(node.mark, f"{where}: must not be empty", "give a path")
        path = Path(os.path.abspath(self.base_dir / Path(text).expanduser()))
        if f.exists is not None:
            self.check_exists(path, f.exists, node.mark, where, text)
        return path

    def check_exists(self, path: Path, kind: str, mark: Mark, where: str, text: str) -> None:
        shown = text if text == str(path) else f"{text} ({path})"
        if not path.exists():
            raise self.invalid(mark, f"{where}: {shown} does not exist",
                               "create it, or fix the path; relative paths start at the manifest's directory")
        if kind == "file" and not path.is_file():
            raise self.invalid(mark, f"{where}: {shown} is not a file", "give the path of a file")
        if kind == "dir" and not path.is_dir():
            raise self.invalid(mark, f"{where}: {shown} is not a directory", "give the path of a directory")

    def command(self, f: Field, node: Node, where: str) -> tuple[str, ...]:
        if isinstance(node, ListNode):
            words = [self.word(item, f"{where}[{i}]") for i, item in enumerate(node.items)]
        else:
            text = self.scalar(node, where, (str,), "a string or a list of strings", "[node, agent.js]")
            try:
                words = shlex.split(text)
            except ValueError as exc:
                raise self.invalid(node.mark, f"{where}: cannot split {text!r}: {exc}",
                                   "close the quote, or write the command as a list") from None
        if not words:
            raise self.invalid(node.mark, f"{where}: the command is empty", "name the program to run")
        program = words[0]
        if "/" in program:
            resolved = os.path.abspath(self.base_dir / Path(program).expanduser())
            self.check_exists(Path(resolved), "file", node.mark, where, program)
            if not os.access(resolved, os.X_OK):
                raise self.invalid(node.mark, f"{where}: {program} is not executable", f"chmod +x {resolved}")
            words[0] = resolved
        elif shutil.which(program) is None:
            raise self.invalid(node.mark, f"{where}: {program!r} is not found on PATH",
                               "install it, or give its path (e.g. ./bin/agent)")
        return tuple(words)

    def models(self, f: Field, node: Node, where: str) -> str | tuple[str, ...]:
        """A model, or a fallback chain (the models tried in order)."""
        if not isinstance(node, ListNode):
            return self.string(f, node, where)
        names = [self.word(item, f"{where}[{i}]") for i, item in enumerate(node.items)]
        try:
            return model_chain(names, where)
        except ValueError as exc:
            raise self.invalid(node.mark, str(exc), f"list each model once, {MAX_CHAIN} at most") from None

    def word(self, node: Node, where: str) -> str:
        """A string-like scalar: numbers are taken as written, booleans and nulls are refused."""
        value = self.scalar(node, where, (str, int, float), "a string", "'text'")
        return value if isinstance(value, str) else str(value)

    def env(self, f: Field, node: Node, where: str) -> dict[str, str]:
        if not isinstance(node, MapNode):
            raise self.invalid(node.mark, f"{where}: expected a mapping of names to values, got {_describe(node)}",
                               "write 'NAME: value' lines indented under env:")
        env: dict[str, str] = {}
        for name, entry in node.entries.items():
            if not _ENV_NAME.match(name):
                self.error(entry.key_mark, f"{where}: {name!r} is not a valid variable name",
                           "use letters, digits and '_', at most 256, not starting with a digit")
            elif name.startswith(RESERVED_ENV_PREFIX):
                self.error(entry.key_mark, f"{where}: {name} is set by the kernel",
                           f"rename it; names starting {RESERVED_ENV_PREFIX} are reserved")
            else:
                try:
                    env[name] = self.word(entry.value, f"{where}.{name}")
                except _Invalid:
                    pass
        return env

    def settings(self, f: Field, node: Node, where: str) -> dict[str, Any]:
        if not isinstance(node, MapNode):
            raise self.invalid(node.mark, f"{where}: expected a mapping, got {_describe(node)}",
                               f"write 'key: value' lines indented under {f.key}:")
        return {key: _plain(entry.value) for key, entry in node.entries.items()}

    # --- lists --------------------------------------------------------------------------

    def items(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, ListNode):
            example = f"[{node.value}]" if isinstance(node, Scalar) and isinstance(node.value, str) else "[...]"
            raise self.invalid(node.mark, f"{where}: expected a list, got {_describe(node)}",
                               f"write a list, e.g. {_leaf(where)}: {example}")
        return node.items

    def list_value(self, f: Field, items: list[Node], where: str) -> tuple[Any, ...]:
        values: list[Any] = []
        for i, item in enumerate(items):
            item_where = f"{where}[{i}]"
            try:
                if f.type is Type.PATHS:
                    value: Any = self.path(f, item, item_where)
                elif f.type is Type.CHOICES:
                    value = self.choice(f, item, item_where)
                elif f.type is Type.NAMES:
                    value = self.scalar(item, item_where, (str,), "an agent name", "worker")
                elif f.type is Type.HOSTS:
                    value = self.egress_entry(item, item_where)
                else:
                    value = self.word(item, item_where)
            except _Invalid:
                continue
            if f.type is not Type.STRINGS and value in values:
                self.error(item.mark, f"{where}: {value} is listed twice", "remove the repeated entry")
                continue
            values.append(value)
        return tuple(values)

    def volumes(self, items: list[Node], where: str) -> tuple[Volume, ...]:
        """``NAME:/path[:ro]`` or ``{name, path, size, read_only}`` each; names and paths apart."""
        volumes: list[Volume] = []
        for i, item in enumerate(items):
            item_where = f"{where}[{i}]"
            try:
                volume = self.volume(item, item_where)
            except _Invalid:
                continue
            clash = next((v for v in volumes if v.name == volume.name or inside(v.path, volume.path)
                          or inside(volume.path, v.path)), None)
            if clash is not None:
                what = f"volume {volume.name!r} is listed twice" if clash.name == volume.name else \
                    f"{volume.path} overlaps {clash.path} (volume {clash.name!r})"
                self.error(item.mark, f"{item_where}: {what}", "give each volume once, at a path of its own")
                continue
            volumes.append(volume)
        return tuple(volumes)

    def volume(self, node: Node, where: str) -> Volume:
        fix = "write NAME:/path[:ro,size=1Gi] or {name: NAME, path: /path, size: 1Gi, read_only: true}"
        if isinstance(node, MapNode):
            fields: dict[str, Node] = {}
            for key, entry in node.entries.items():
                if key not in _VOLUME_KEYS:
                    close = _suggest(key, _VOLUME_KEYS)
                    raise self.invalid(entry.key_mark, f"{where}: unknown key {key!r}",
                                       f"did you mean {close!r}?" if close else f"use {', '.join(_VOLUME_KEYS)}")
                fields[key] = entry.value
            missing = [key for key in ("name", "path") if key not in fields]
            if missing:
                raise self.invalid(node.mark, f"{where}: missing {' and '.join(missing)}", fix)
            name = self.volume_name(_VOLUME_SIZE, fields["name"], f"{where}.name")
            path_node = fields["path"]
            path = self.scalar(path_node, f"{where}.path", (str,), "a path", "/data")
            size = None
            if "size" in fields:
                size = self.volume_size(self.unit(_VOLUME_SIZE, fields["size"], f"{where}.size"),
                                        fields["size"].mark, f"{where}.size")
            read_only = False
            if "read_only" in fields:
                read_only = self.scalar(fields["read_only"], f"{where}.read_only", (bool,), "true or false", "true")
        else:
            text = self.scalar(node, where, (str,), "a volume", "data:/data")
            try:
                short = parse_short_volume(text)
                size = None if short.size is None else units.parse_bytes(short.size, "size")
            except ValueError as exc:
                raise self.invalid(node.mark, f"{where}: {exc}", fix) from None
            name = self.checked_volume_name(short.name, node.mark, where)
            if size is not None:
                size = self.volume_size(size, node.mark, f"{where}: size")
            path, read_only, path_node = short.path, bool(short.read_only), node
        problem = path_problem(path)
        if problem is not None:
            raise self.invalid(path_node.mark, f"{where}: {path!r} {problem}", "give an absolute path such as /data")
        return Volume(name, path, size, read_only)

    def volume_size(self, size: int, mark: Mark, where: str) -> int:
        if size < MIN_WORKSPACE:
            raise self.invalid(mark, f"{where}: {size} bytes is less than 1Mi",
                               "give at least 1Mi: the volume's file system needs room for itself")
        return size

    def egress_entry(self, node: Node, where: str) -> str:
        text = self.scalar(node, where, (str,), "a host", "example.com")
        try:
            return parse_entry(text).text
        except ValueError as exc:
            raise self.invalid(node.mark, f"{where}: {exc}", f"write {ENTRY_FORMS}") from None

    # --- agents -------------------------------------------------------------------------

    def agents(self, node: Node, where: str) -> tuple[AgentSpec, ...]:
        if not isinstance(node, MapNode) or not node.entries:
            raise self.invalid(node.mark, f"{where}: expected a mapping of agent names to agents, got "
                               f"{'an empty mapping' if isinstance(node, MapNode) else _describe(node)}",
                               "declare agents by name: 'agents: {hello: {script: hello.py}}'")
        specs: list[AgentSpec] = []
        parsed_agents: dict[str, _Parsed] = {}
        instances: dict[str, str] = {}
        for name, entry in node.entries.items():
            if not _NAME.match(name):
                self.error(entry.key_mark, f"{where}: {name!r} is not a valid agent name",
                           "use letters, digits, '-', '_' and '.', at most 60, starting with a letter or digit")
                continue
            parsed = self.section(entry.value, schema.AGENT, _join(where, name), entry.key_mark)
            if parsed is None:
                continue
            spec = self.agent(name, parsed, _join(where, name), entry.key_mark)
            for instance in spec.instance_names():
                if not _NAME.match(instance):
                    # Replicas run as name-1 ... name-N: SPAWN checks those names, not the one declared.
                    self.error(entry.key_mark, f"{where}: agent {name!r} would run as {instance!r}, "
                               "longer than an agent name may be", "shorten the name: at most 60 "
                               "characters with its replica number")
                    break
                if instance in instances:
                    self.error(entry.key_mark, f"{where}: agent {name!r} would run as {instance!r}, "
                               f"which agent {instances[instance]!r} already uses", "rename one of them")
                    break
                instances[instance] = name
            specs.append(spec)
            parsed_agents[name] = parsed
        self.check_dependencies(specs, parsed_agents, where)
        return tuple(self.sized_groups(specs, where))

    def agent(self, name: str, parsed: _Parsed, where: str, key_mark: Mark) -> AgentSpec:
        values = parsed.values
        has_script, has_command = parsed.given("script"), parsed.given("command")
        if has_script and has_command:
            later = max(parsed.key_marks["script"], parsed.key_marks["command"], key=lambda m: (m.line, m.column))
            self.error(later, f"{where}: both script and command are set",
                       "keep one: script runs a Python file, command runs any program")
        elif not has_script and not has_command:
            self.error(key_mark, f"{where}: neither script nor command is set",
                       "add 'script: path/to/agent.py' or 'command: [program, arg]'")
        # None: permissions were written but invalid, and already reported.
        held = values.get("permissions", None if parsed.given("permissions") else schema.DEFAULT_CAPABILITIES)
        if parsed.given("egress") and held is not None and not {"http", "admin"} & set(held):
            self.conflict(parsed, "egress", where, "has no effect without the 'http' permission",
                          "add http to permissions, or remove egress")
        self.check_volumes(parsed, where)
        return AgentSpec(name=name, **values)

    def check_volumes(self, parsed: _Parsed, where: str) -> None:
        """``workspace`` and ``volumes`` against each other and the sandbox."""
        values = parsed.values
        box: Sandbox | None = values.get("sandbox")
        for key in ("workspace", "volumes"):
            if parsed.given(key) and box is not None and not box.enabled:
                self.conflict(parsed, key, where, "needs the sandbox, but sandbox.enabled is false",
                              f"remove {key}, or set enabled: true")
        if values.get("workspace") is None:
            return
        if box is not None and box.workspace is not None:
            self.conflict(parsed, "workspace", where, "and sandbox.workspace both want /workspace",
                          "keep one: workspace names a shared volume, sandbox.workspace a private directory")
        for volume in values.get("volumes", ()):
            if volume.name == values.get("workspace") or inside(volume.path, WORKSPACE_PATH) \
                    or inside(WORKSPACE_PATH, volume.path):
                self.conflict(parsed, "workspace", where, f"mounts {values.get('workspace')} at {WORKSPACE_PATH}, "
                              f"which clashes with volumes' {volume.name}:{volume.path}",
                              "mount that volume elsewhere, or drop workspace and list the volume at /workspace")

    def check_dependencies(self, specs: list[AgentSpec], parsed: dict[str, _Parsed], where: str) -> None:
        names = [spec.name for spec in specs]
        edges: dict[str, list[tuple[str, Mark]]] = {}
        for spec in specs:
            marks = parsed[spec.name].item_marks.get("depends_on", [])
            edges[spec.name] = []
            for dep, mark in zip(spec.depends_on, marks):
                dep_where = f"{where}.{spec.name}.depends_on"
                if dep == spec.name:
                    self.error(mark, f"{dep_where}: {spec.name!r} depends on itself", "remove it from depends_on")
                elif dep not in names:
                    close = _suggest(dep, names)
                    self.error(mark, f"{dep_where}: no agent named {dep!r}",
                               f"did you mean {close!r}?" if close else f"declare it, or use one of {', '.join(names)}")
                else:
                    edges[spec.name].append((dep, mark))
        for cycle, mark in _cycles(names, edges):
            self.error(mark, f"{where}: dependency cycle: {' -> '.join(cycle)}",
                       "remove one of these depends_on entries")

    def sized_groups(self, specs: list[AgentSpec], where: str) -> list[AgentSpec]:
        """``specs`` with each placement group sized (its members' replicas), once its members are
        checked to reserve the same, with the same labels and strategy (the bundles Ray makes)."""
        members: dict[str, list[tuple[AgentSpec, _Parsed]]] = {}
        for spec in specs:
            found = self.group_members.get(f"{_join(where, spec.name)}.placement")
            if found is not None:
                members.setdefault(found[0], []).append((spec, found[1]))
        groups: dict[str, PlacementGroup] = {}
        for name, group in members.items():
            first, first_parsed = group[0]
            for spec, parsed in group:
                at, mark = f"{_join(where, spec.name)}.placement.group", parsed.value_marks["group"]
                mine, theirs = _reservation(spec), _reservation(first)
                if not any(mine[key] for key in _BUNDLE):
                    self.error(mark, f"{at}: a member of a group reserves a bundle, and agent {spec.name!r} "
                               "reserves nothing", "set its limits.memory (not unlimited), or placement cpus, "
                               "gpus or resources")
                differs = next((key for key in mine if mine[key] != theirs[key]), None)
                if differs is not None:
                    self.error(mark, f"{at}: agent {spec.name!r} asks group {name!r} for {differs} "
                               f"{_shown(differs, mine[differs])}, agent {first.name!r} (line "
                               f"{first_parsed.value_marks['group'].line}) for {_shown(differs, theirs[differs])}",
                               "every member of a group reserves the same (limits.memory, "
                               "placement cpus, gpus, resources), with the same labels and strategy")
            size = sum(spec.replicas for spec, _ in group)
            if size > MAX_GROUP:
                self.error(first_parsed.value_marks["group"], f"{_join(where, first.name)}.placement.group: group "
                           f"{name!r} has {size} members (replicas), more than {MAX_GROUP}", "split it in two groups")
            groups[name] = PlacementGroup(name, size)
        sized = []
        for spec in specs:
            found = self.group_members.get(f"{_join(where, spec.name)}.placement")
            if found is not None and spec.placement is not None:
                spec = replace(spec, placement=replace(spec.placement, group=groups[found[0]]))
            sized.append(spec)
        return sized

    # --- checks across a section's options ----------------------------------------------

    def conflict(self, parsed: _Parsed, key: str, where: str, message: str, fix: str) -> None:
        self.error(parsed.key_marks[key], f"{_join(where, key)}: {message}", fix)

    def finish_sandbox(self, parsed: _Parsed, where: str) -> Sandbox:
        values = parsed.values
        if values.get("enabled") is False:
            for key in ("writable", "readonly", "hostname", "workspace"):
                if parsed.given(key):
                    self.conflict(parsed, key, where, "needs the sandbox, but enabled is false",
                                  f"remove {key}, or set enabled: true")
            if parsed.given("network") and values.get("network") is False:
                self.conflict(parsed, "network", where, "without the sandbox nothing cuts the network off",
                              "remove network: false, or set enabled: true")
        writable = values.get("writable", ())
        for path, mark in zip(values.get("readonly", ()), parsed.item_marks.get("readonly", [])):
            if path in writable:
                self.error(mark, f"{where}: {path} is both writable and readonly", "list it in only one of them")
        return Sandbox(**values)

    def finish_placement(self, parsed: _Parsed, where: str) -> Placement:
        """Labels and resources checked as a kernel with a cluster checks them; a group's name is
        held until every agent is read (``sized_groups``)."""
        values = parsed.values
        fix = "use letters, digits, '_', '.', '/' and '-', starting with a letter or digit"
        for key in ("labels", "resources"):
            entries = values.get(key, {})
            if len(entries) > MAX_LABELS:
                self.conflict(parsed, key, where, f"names {len(entries)}, at most {MAX_LABELS}", "name fewer")
            for (name, value), mark in zip(entries.items(), parsed.item_marks.get(key, [])):
                if not _is_label(name):
                    self.error(mark, f"{where}.{key}: {name!r} is not a valid {key[:-1]} name", fix)
                elif key == "labels" and not (isinstance(value, str) and _is_label(value)):
                    self.error(mark, f"{where}.labels.{name}: {value!r} is not a valid label value",
                               f"{fix}; quote a number ('{value}')" if isinstance(value, (int, float)) else fix)
                elif key == "resources" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                             or not 0 <= value <= MAX_AMOUNT):
                    self.error(mark, f"{where}.resources.{name}: expected an amount from 0 to {MAX_AMOUNT}, "
                               f"got {value!r}", "write a number, e.g. agent_slots: 1")
        group = values.pop("group", None)
        if group is not None and not _is_label(group):
            self.error(parsed.value_marks["group"], f"{where}.group: {group!r} is not a valid group name", fix)
        elif group is not None:
            self.group_members[where] = (group, parsed)
        elif parsed.given("strategy"):
            self.conflict(parsed, "strategy", where, "has no effect without group",
                          "name the group its members share, or remove strategy")
        return Placement(**values)

    def finish_kernel(self, parsed: _Parsed, where: str) -> KernelSection:
        """The sandbox settings checked as the kernel will check them, relative paths made absolute."""
        values = parsed.values
        if "sandbox" in values:
            values["sandbox"] = absolute_paths(values["sandbox"], self.base_dir)
            try:
                TemplateSettings.from_section(values["sandbox"])
            except ValueError as exc:
                self.error(parsed.value_marks["sandbox"], f"kernel.{exc}",
                           "fix it (docs/sandboxes.md, Templates); relative paths start at the manifest's directory")
        return KernelSection(**values)

    def finish_restart(self, parsed: _Parsed, where: str) -> Restart:
        values = parsed.values
        if values.get("policy") == "never" or not parsed.given("policy"):
            for key in ("max_restarts", "window", "backoff", "backoff_max"):
                if parsed.given(key):
                    self.conflict(parsed, key, where, "has no effect with policy never",
                                  f"set policy: on-failure or always, or remove {key}")
        if values.get("window") == 0:
            self.conflict(parsed, "window", where, "must be longer than 0", "use e.g. window: 60s")
        restart = Restart(**values)
        if restart.backoff_max < restart.backoff:
            key = "backoff_max" if parsed.given("backoff_max") else "backoff"
            if parsed.given(key):
                self.conflict(parsed, key, where, f"backoff_max ({restart.backoff_max:g}s) is shorter than "
                              f"backoff ({restart.backoff:g}s)", "make backoff_max at least backoff")
        return restart

    def finish_readiness(self, parsed: _Parsed, where: str) -> Readiness | None:
        values = parsed.values
        kind = values.get("kind")
        if kind is None:
            return None
        for key, wanted in (("pattern", "log-line"), ("delay", "delay")):
            if kind == wanted and not parsed.given(key):
                self.error(parsed.key_marks["kind"], f"{where}: kind {kind} needs {key!r}",
                           f"add '{key}:'" + (" with a regular expression" if key == "pattern" else ", e.g. 2s"))
            elif kind != wanted and parsed.given(key):
                self.conflict(parsed, key, where, f"is used only by kind {wanted}, not {kind}",
                              f"remove {key}, or set kind: {wanted}")
        pattern = values.get("pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                self.error(parsed.value_marks["pattern"], f"{where}.pattern: invalid regular expression: {exc}",
                           "fix the expression, in Python re syntax; escape literal ( [ . with \\")
        readiness = Readiness(**values)
        if kind == "delay" and readiness.delay is not None and readiness.delay > readiness.timeout:
            self.conflict(parsed, "delay", where, f"{readiness.delay:g}s is longer than timeout "
                          f"({readiness.timeout:g}s)", "shorten delay or lengthen timeout")
        return readiness


def _is_label(text: str) -> bool:
    """A Ray node label's key or value, a custom resource's or a placement group's name."""
    return len(text) <= MAX_LABEL and _LABEL.match(text) is not None


#: What a placement group member's bundle holds (``_reservation``'s keys beside them must match too).
_BUNDLE = ("limits.memory", "cpus", "gpus", "resources")


def _reservation(spec: AgentSpec) -> dict[str, Any]:
    """What a placement group member reserves, and where and how its group is placed."""
    placement = spec.placement
    assert placement is not None
    return {"limits.memory": spec.limits.memory, "cpus": placement.cpus, "gpus": placement.gpus,
            "resources": placement.resources, "labels": placement.labels, "strategy": placement.strategy}


def _shown(key: str, value: Any) -> str:
    if key == "limits.memory":
        return "unlimited" if value is None else f"{value / 2**20:g}Mi"
    return repr(value)


def _plain(node: Node) -> Any:
    """A pass-through value as plain Python data."""
    if isinstance(node, MapNode):
        return {key: _plain(entry.value) for key, entry in node.entries.items()}
    if isinstance(node, ListNode):
        return [_plain(item) for item in node.items]
    return node.value


def _cycles(names: list[str], edges: dict[str, list[tuple[str, Mark]]]) -> list[tuple[list[str], Mark]]:
    """Each dependency cycle once, with the mark of the depends_on entry that closes it."""
    state: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: done
    found: list[tuple[list[str], Mark]] = []
    for root in names:
        if root in state:
            continue
        path = [root]
        stack = [iter(edges[root])]
        state[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            dep, mark = step
            if state.get(dep) == 1:
                found.append((path[path.index(dep):] + [dep], mark))
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(edges[dep]))
    return found


_UNITS: dict[Type, tuple[Callable[[Any, str], Any], str]] = {
    Type.SIZE: (units.parse_bytes, "512Mi"),
    Type.CPU: (units.parse_cpu, "0.5"),
    Type.DURATION: (units.parse_duration, "30s"),
}

_CONVERTERS: dict[Type, Callable[[_Validator, Field, Node, str], Any]] = {
    Type.STRING: _Validator.string,
    Type.BOOL: _Validator.boolean,
    Type.INT: _Validator.number,
    Type.NUMBER: _Validator.number,
    Type.SIZE: _Validator.unit,
    Type.CPU: _Validator.unit,
    Type.DURATION: _Validator.unit,
    Type.PATH: _Validator.path,
    Type.CHOICE: _Validator.choice,
    Type.VOLUME: _Validator.volume_name,
    Type.COMMAND: _Validator.command,
    Type.MODELS: _Validator.models,
    Type.ENV: _Validator.env,
    Type.SETTINGS: _Validator.settings,
}


def _build(cls: type) -> Callable[[_Validator, _Parsed, str], Any]:
    return lambda validator, parsed, where: cls(**parsed.values)


_FINISH: dict[str, Callable[[_Validator, _Parsed, str], Any]] = {
    schema.SANDBOX.path: _Validator.finish_sandbox,
    schema.LIMITS.path: _build(Limits),
    schema.RESTART.path: _Validator.finish_restart,
    schema.AGENT_LLM.path: _build(AgentLLM),
    schema.READINESS.path: _Validator.finish_readiness,
    schema.PLACEMENT.path: _Validator.finish_placement,
    schema.KERNEL_LLM.path: _build(KernelLLM),
    schema.KERNEL_CONNECTIONS.path: _build(KernelConnections),
    schema.KERNEL.path: _Validator.finish_kernel,
}
