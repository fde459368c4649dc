"""YAML to marked nodes: syntax errors, duplicate keys, merges and unreadable files, each with its exact place."""
from __future__ import annotations

import pytest

from agentos.manifest import ManifestError
from agentos.manifest.loader import ListNode, MapNode, Node, Scalar, compose, read


def mapping(node: Node | None) -> MapNode:
    """``node``, which the test's YAML wrote as a mapping."""
    assert isinstance(node, MapNode), node
    return node


def scalar(node: Node) -> object:
    """The value of ``node``, which the test's YAML wrote as a scalar."""
    assert isinstance(node, Scalar), node
    return node.value


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(ManifestError) as info:
        compose(text, "m.yaml")
    return [(p.mark.line, p.mark.column, p.message, p.fix) for p in info.value.problems]


def test_nodes_keep_one_based_marks_and_yaml_types() -> None:
    root = compose("agents:\n  a:\n    replicas: 2\n    args: [x, 1.5, true]\n", "m.yaml")
    entry = mapping(mapping(root).entries["agents"].value).entries["a"]
    assert (entry.key_mark.line, entry.key_mark.column) == (2, 3)
    replicas = mapping(entry.value).entries["replicas"].value
    assert isinstance(replicas, Scalar) and replicas.value == 2
    assert (replicas.mark.line, replicas.mark.column) == (3, 15)
    args = mapping(entry.value).entries["args"].value
    assert isinstance(args, ListNode)
    assert [scalar(item) for item in args.items] == ["x", 1.5, True]
    assert str(args.items[2].mark) == "m.yaml:4:20"


def test_keys_keep_their_source_text() -> None:
    # Plain safe_load turns these keys into True, False and None.
    root = compose("on: 1\nno: 2\nnull: 3\n", "m.yaml")
    assert list(root.entries) == ["on", "no", "null"]  # type: ignore[union-attr]


def test_empty_documents_compose_to_none() -> None:
    assert compose("", "m.yaml") is None
    assert compose("# only a comment\n", "m.yaml") is None


def test_syntax_error_points_at_the_problem() -> None:
    assert problems("agents:\n  a: b: c\n") == [
        (2, 7, "invalid YAML: mapping values are not allowed in this context",
         "check the indentation and quoting here; quote values that contain ': ' or start with '*', '&' or '!'")]


def test_bad_indentation_points_at_the_line() -> None:
    [(line, column, message, _)] = problems("agents:\n  a:\n    script: x.py\n   args: []\n")
    assert (line, column, message) == (4, 4, "invalid YAML: did not find expected key")


def test_tab_indentation_has_its_own_fix() -> None:
    assert problems("agents:\n\ta: {}\n") == [(2, 1, "invalid YAML: a tab character", "indent with spaces, not tabs")]


def test_duplicate_key_names_both_places() -> None:
    assert problems("agents:\n  a: {}\n  b: {}\n  a: {}\n") == [
        (4, 3, "duplicate key 'a' (first at line 2)", "keep only one of them")]


def test_more_than_one_document_is_refused() -> None:
    assert problems("agents: {}\n---\nagents: {}\n") == [
        (2, 1, "a manifest is a single YAML document", "remove the '---' and everything after it")]


def test_custom_tags_are_refused() -> None:
    [(line, column, message, fix)] = problems("agents:\n  a: !include other.yaml\n")
    assert (line, column) == (2, 6)
    assert "could not determine a constructor for the tag '!include'" in message
    assert fix == "remove the '!' tag; manifests use plain YAML types"


def test_undefined_alias() -> None:
    [(line, column, message, fix)] = problems("agents:\n  a: *defaults\n")
    assert (line, column) == (2, 6)
    assert "undefined alias" in message
    assert fix == "define the anchor (&name) before the alias (*name) that uses it"


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    assert problems("a: &loop\n  - *loop\n") == [
        (1, 4, "an alias refers to the node that contains it", "remove the '*' alias inside the node anchored here")]


def test_non_scalar_key() -> None:
    assert problems("? [a, b]\n: 1\n") == [
        (1, 3, "a key must be a plain name, not a list or mapping", "write the key as a plain word")]


def test_merge_keys_fill_in_without_overriding() -> None:
    root = compose("x-base: &base {memory: 1Gi, cpu: 1}\n"
                   "limits:\n  <<: *base\n  cpu: 2\n", "m.yaml")
    limits = mapping(mapping(root).entries["limits"].value)
    assert {k: scalar(e.value) for k, e in limits.entries.items()} == {"cpu": 2, "memory": "1Gi"}
    # The merged value keeps the mark of where it was written.
    assert str(limits.entries["memory"].value.mark) == "m.yaml:1:24"


def test_merge_of_a_scalar_points_at_the_merge_key() -> None:
    assert problems("x: &x 1\nlimits:\n  <<: *x\n") == [
        (3, 3, "'<<' merges only mappings", "merge an anchored mapping: '<<: *defaults'")]


def test_read_reports_unreadable_files_as_problems(tmp_path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ManifestError) as info:
        read(missing)
    assert str(info.value) == f"{missing}: error: no such file (fix: check the path)"

    with pytest.raises(ManifestError) as info:
        read(tmp_path)
    assert str(info.value) == f"{tmp_path}: error: is a directory, not a manifest (fix: give the path of a .yaml file)"

    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"agents:\n  caf\xe9: {}\n")
    with pytest.raises(ManifestError) as info:
        read(latin)
    assert str(info.value) == (f"{latin}: error: not UTF-8 text (invalid continuation byte at byte 13) "
                               "(fix: save the manifest as UTF-8)")

