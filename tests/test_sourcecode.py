"""The tree passes its linter and its type checker, as pyproject.toml configures them.

``[tool.ruff]`` and ``[tool.mypy]`` say what is checked (the whole tree; the public API, what
users import, under mypy's --strict flags); this runs both, as asyncpg's
``tests/test__sourcecode.py`` runs flake8 and mypy, so a change that breaks either fails here.
Both come from the test extra, in the interpreter running the tests. mypy keeps its incremental
cache in ``.mypy_cache`` (git-ignored): a first run takes about 25 s on two idle cores (over a
minute while other tests load them), a later one a few seconds. The compiled modules' ``.pyi``
stubs are checked against the modules themselves by mypy's ``stubtest`` (what each module
defines, its signatures), with ``tests/stubtest_allowlist.txt`` for what Cython adds.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=290)


def test_ruff_passes() -> None:
    result = _run("ruff", "check", "--output-format", "concise")
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


@pytest.mark.timeout(300)
def test_mypy_passes() -> None:
    result = _run("mypy")
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"


@pytest.mark.timeout(300)
def test_the_compiled_modules_match_their_stubs() -> None:
    modules = sorted(f"agentos._fast.{stub.stem}" for stub in (ROOT / "src/agentos/_fast").glob("*.pyi"))
    result = _run("mypy.stubtest", "--concise", "--allowlist", str(ROOT / "tests/stubtest_allowlist.txt"), *modules)
    assert result.returncode == 0, f"stubtest found stubs that differ from {modules}:\n{result.stdout}{result.stderr}"
