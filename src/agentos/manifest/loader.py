"""YAML text to a tree of nodes that remember where they were written.

``yaml.compose`` keeps every node's start mark, which plain ``yaml.safe_load``
throws away; validation needs them so each error can name its line and column.
Scalars are typed by PyYAML's safe resolver (``true``, ``3``, ``0.5``); mapping
keys keep their source text (so ``on:`` and ``no:`` stay the strings they look
like). ``<<`` merge keys work as in PyYAML; duplicate keys are errors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError, Mark, Problem

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class Scalar:
    """A leaf: ``value`` typed by YAML (str, int, float, bool, None ...)."""

    value: Any
    mark: Mark


@dataclass(slots=True)
class Entry:
    """One ``key: value`` of a mapping."""

    key: str
    key_mark: Mark
    value: Node


@dataclass(slots=True)
class MapNode:
    """A mapping; ``entries`` keeps the order the keys were written in."""

    entries: dict[str, Entry]
    mark: Mark


@dataclass(slots=True)
class ListNode:
    """A sequence."""

    items: list[Node]
    mark: Mark


Node = Scalar | MapNode | ListNode


def read(path: str | os.PathLike[str]) -> tuple[Node | None, str]:
    """Compose the manifest at ``path``: ``(root node or None if empty, file name for marks)``."""
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ManifestError([Problem(Mark(file), "is a directory, not a manifest",
                                     "give the path of a .yaml file")]) from None
    except FileNotFoundError:
        raise ManifestError([Problem(Mark(file), "no such file", "check the path")]) from None
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(Mark(file), f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                                     "save the manifest as UTF-8")]) from None
    except OSError as exc:
        raise ManifestError([Problem(Mark(file), f"cannot read: {exc.strerror}",
                                     "check the file's permissions")]) from None
    return compose(text, file), file


def compose(text: str, file: str = "<string>") -> Node | None:
    """Compose YAML ``text`` into nodes marked with ``file``; raises ManifestError."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        problems: list[Problem] = []
        node = _Converter(loader, file, problems).node(root)
    except yaml.MarkedYAMLError as exc:
        raise ManifestError([_syntax_problem(exc, text, file)]) from None
    finally:
        loader.dispose()
    if problems:
        raise ManifestError(problems)
    return node


def mark_of(yaml_mark: Any, file: str) -> Mark:
    """A PyYAML mark (0-based) as a 1-based :class:`Mark`."""
    return Mark(file, yaml_mark.line + 1, yaml_mark.column + 1)


class _Converter:
    def __init__(self, loader: Any, file: str, problems: list[Problem]) -> None:
        self.loader = loader
        self.file = file
        self.problems = problems
        # Nodes being converted right now: an alias back to one of them is a loop.
        self.active: set[int] = set()

    def mark(self, node: yaml.Node) -> Mark:
        return mark_of(node.start_mark, self.file)

    def node(self, node: yaml.Node) -> Node:
        if id(node) in self.active:
            self.problems.append(Problem(self.mark(node), "an alias refers to the node that contains it",
                                         "remove the '*' alias inside the node anchored here"))
            return Scalar(None, self.mark(node))
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node)
            if isinstance(node, yaml.SequenceNode):
                return ListNode([self.node(item) for item in node.value], self.mark(node))
            return Scalar(self.loader.construct_object(node, deep=True), self.mark(node))
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode) -> MapNode:
        entries: dict[str, Entry] = {}
        merged: list[Entry] = []
        for key_node, value_node in node.value:
            key_mark = self.mark(key_node)
            if key_node.tag == _MERGE_TAG:
                merged.extend(self.merge_sources(value_node, key_mark))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(key_mark, "a key must be a plain name, not a list or mapping",
                                             "write the key as a plain word"))
                continue
            key = key_node.value
            if key in entries:
                first = entries[key].key_mark
                self.problems.append(Problem(key_mark, f"duplicate key {key!r} (first at line {first.line})",
                                             "keep only one of them"))
                continue
            entries[key] = Entry(key, key_mark, self.node(value_node))
        for entry in merged:
            # Keys written out win over merged ones, earlier merges over later ones.
            entries.setdefault(entry.key, entry)
        return MapNode(entries, self.mark(node))

    def merge_sources(self, value_node: yaml.Node, key_mark: Mark) -> list[Entry]:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        entries: list[Entry] = []
        for source in sources:
            converted = self.node(source)
            if not isinstance(converted, MapNode):
                self.problems.append(Problem(key_mark, "'<<' merges only mappings",
                                             "merge an anchored mapping: '<<: *defaults'"))
                continue
            entries.extend(converted.entries.values())
        return entries


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, file: str) -> Problem:
    where = exc.problem_mark or exc.context_mark
    mark = mark_of(where, file) if where is not None else Mark(file)
    problem = exc.problem or exc.context or "invalid YAML"
    if "expected a single document" in (exc.context or "") + problem:
        return Problem(mark, "a manifest is a single YAML document", "remove the '---' and everything after it")
    if where is not None and text[where.index:where.index + 1] == "\t":
        return Problem(mark, "invalid YAML: a tab character", "indent with spaces, not tabs")
    if "undefined alias" in problem:
        return Problem(mark, f"invalid YAML: {problem}",
                       "define the anchor (&name) before the alias (*name) that uses it")
    if "constructor" in problem:
        return Problem(mark, f"invalid YAML: {problem}", "remove the '!' tag; manifests use plain YAML types")
    return Problem(mark, f"invalid YAML: {problem}",
                   "check the indentation and quoting here; quote values that contain ': ' or start with "
                   "'*', '&' or '!'")
