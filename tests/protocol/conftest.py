from __future__ import annotations

import importlib

import pytest

from agentos.protocol import codec_py


@pytest.fixture(params=["python", "compiled"])
def codec(request):
    """Each codec test runs against both twins; the compiled one must be built."""
    if request.param == "python":
        return codec_py
    return importlib.import_module("agentos._fast.codec")
