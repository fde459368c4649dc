"""Write a manifest (and the files it names) into a temp dir, then load it."""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agentos.manifest import Manifest, ManifestError, load

Errors = list[tuple[int, int, str, str]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with an agent script, a data dir and an executable, as manifests refer to them."""
    (tmp_path / "agent.py").write_text("print('hello')\n")
    (tmp_path / "data").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    return tmp_path


@pytest.fixture
def valid(project: Path) -> Callable[[str], Manifest]:
    """Load manifest text that must be valid."""
    def load_text(text: str) -> Manifest:
        path = project / "m.yaml"
        path.write_text(textwrap.dedent(text))
        return load(path)
    return load_text


@pytest.fixture
def errors(project: Path) -> Callable[[str], Errors]:
    """Load manifest text that must be invalid: its problems as (line, column, message, fix)."""
    def load_text(text: str) -> Errors:
        path = project / "m.yaml"
        path.write_text(textwrap.dedent(text))
        with pytest.raises(ManifestError) as info:
            load(path)
        assert all(p.mark.file == str(path) for p in info.value.problems)
        return [(p.mark.line, p.mark.column, p.message, p.fix) for p in info.value.problems]
    return load_text
