"""docs/security.md names a test for every promise: each named test must exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
#: ``tests/a/b.py::name[params]`` or ``::name`` after such a path in the same promise.
_REF = re.compile(r"`(tests/[\w/]+\.py)?::(\w+|\*)(?:\[[^\]]*\])?`")


def test_every_test_the_security_doc_names_exists() -> None:
    text = DOC.read_text()
    promises = re.split(r"\n### ", text)[1:]
    assert len(promises) >= 10
    for promise in promises:
        refs = _REF.findall(promise)
        assert refs, f"a promise without a test: {promise.splitlines()[0]}"
        current: Path | None = None
        for path, name in refs:
            if path:
                current = ROOT / path
            assert current is not None and current.is_file(), (promise.splitlines()[0], path)
            if name != "*":
                assert re.search(rf"^(async )?def {name}\(", current.read_text(), re.M), \
                    f"docs/security.md names {current.relative_to(ROOT)}::{name}, which does not exist"
