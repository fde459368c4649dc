"""The installed wheel ships compiled modules with their stubs and py.typed, and no sources."""
from __future__ import annotations

import json
import os
from importlib import metadata

import pytest


def _installed() -> metadata.Distribution:
    dist = metadata.distribution("agentos")
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        pytest.skip("editable install: the wheel's contents are checked on a regular install (CI)")
    return dist


def _installed_files() -> list[str]:
    return [str(f) for f in _installed().files or []]


def test_wheel_has_stubs_and_no_sources() -> None:
    files = _installed_files()
    assert not [f for f in files if f.endswith((".pyx", ".pxd", ".pxi", ".c", ".h"))]
    assert "agentos/py.typed" in files
    compiled = [f for f in files if f.startswith("agentos/_fast/") and f.endswith(".so")]
    assert {f.split("/")[-1].split(".")[0] for f in compiled} >= {"codec", "reactor", "linux"}
    for so in compiled:
        stub = so.split(".")[0] + ".pyi"
        assert stub in files, f"{so} ships without {stub}"


def test_wheel_has_the_sandbox_init_program() -> None:
    """agentos-init (a sandbox's pid 1, docs/sandboxes.md) is installed beside the compiled
    modules, executable: pip keeps the mode the wheel records."""
    files = _installed_files()
    assert "agentos/_fast/agentos-init" in files
    program = metadata.distribution("agentos").locate_file("agentos/_fast/agentos-init")
    assert os.access(str(program), os.X_OK), program


def test_installing_registers_the_pytest_plugin(pytestconfig: pytest.Config) -> None:
    """The wheel's pytest11 entry point (docs/testing.md): this very run loaded the plugin."""
    [entry] = [e for e in _installed().entry_points if e.group == "pytest11"]
    assert (entry.name, entry.value) == ("agentos", "agentos.testing.pytest_plugin")
    assert pytestconfig.pluginmanager.get_plugin("agentos") is entry.load()
