"""The compiled modules must be what runs unless AGENTOS_NO_EXTENSIONS says otherwise."""
from __future__ import annotations

import os
import re
from pathlib import Path

from agentos import protocol
from agentos._extensions import EXTENSIONS_LOADED, NO_EXTENSIONS
from agentos.kernel import daemon


def test_compiled_modules_loaded_when_they_should_be() -> None:
    if NO_EXTENSIONS:
        assert protocol.codec is protocol.codec_py
        assert daemon.reactor_mod.__name__ == "agentos.kernel.reactor"
    else:
        assert EXTENSIONS_LOADED["codec"], "agentos._fast.codec did not load"
        assert EXTENSIONS_LOADED["reactor"], "agentos._fast.reactor did not load"
        assert protocol.codec.__name__ == "agentos._fast.codec"


def test_kernel_runs_the_expected_twins(kernel) -> None:
    ext = kernel.client().hello()["capabilities"]["core"]["extensions"]
    expected = os.environ.get("AGENTOS_NO_EXTENSIONS", "") in ("", "0")
    assert ext == {"codec": expected, "reactor": expected}


def test_compiled_sources_import_nothing_from_the_kernel() -> None:
    """``agentos._fast`` sits below the packages whose twins it holds: what both reactor twins
    share lives in ``agentos._reactor_common``. Stubs (.pyi) are exempt: they describe the
    Python twin on purpose, so type checkers see its annotations, and are never imported."""
    fast = Path(__file__).resolve().parents[2] / "src" / "agentos" / "_fast"
    sources = [p for p in fast.rglob("*") if p.suffix in (".pyx", ".pxd", ".pxi")]
    assert {p.name for p in sources} >= {"reactor.pyx", "codec.pyx", "linux.pyx"}
    importing = re.compile(r"^\s*(from\s+agentos\.kernel\b|c?import\s+agentos\.kernel\b)", re.M)
    assert [p.name for p in sources if importing.search(p.read_text())] == []
