"""The one place that decides between compiled modules and their pure-Python twins.

``AGENTOS_NO_EXTENSIONS=1`` selects the twins everywhere. Otherwise a compiled
module that fails to import falls back to its twin, and ``EXTENSIONS_LOADED``
records which did load, so a test can fail when they should have.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("AGENTOS_NO_EXTENSIONS", "") not in ("", "0")

#: name -> True if ``agentos._fast.<name>`` is the module in use.
EXTENSIONS_LOADED: dict[str, bool] = {}


def load_twin(name: str, twin: ModuleType) -> ModuleType:
    """Return ``agentos._fast.<name>`` unless extensions are off or it is missing."""
    if NO_EXTENSIONS:
        EXTENSIONS_LOADED[name] = False
        return twin
    try:
        module = importlib.import_module(f"agentos._fast.{name}")
    except ImportError:
        EXTENSIONS_LOADED[name] = False
        return twin
    EXTENSIONS_LOADED[name] = True
    return module


def load_required(name: str) -> ModuleType:
    """Import a compiled module that has no twin (the sandbox's ``linux``): it raises, never degrades."""
    return importlib.import_module(f"agentos._fast.{name}")
