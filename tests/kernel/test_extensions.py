"""The compiled modules must be what runs unless AGENTOS_NO_EXTENSIONS says otherwise."""
from __future__ import annotations

import os

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
