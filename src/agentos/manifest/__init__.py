"""Agent manifests: a team of agents declared in YAML, validated strictly before anything starts.

``load(path)`` returns a :class:`Manifest` or raises :class:`ManifestError`,
whose ``problems`` each carry ``file:line:column`` and a fix. docs/manifest.md
is the reference; :mod:`.schema` is its source of truth.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ManifestError, Mark, Problem
from .loader import compose, read
from .model import (
    AgentLLM,
    AgentSpec,
    KernelConnections,
    KernelLLM,
    KernelSection,
    Limits,
    Manifest,
    Readiness,
    Restart,
    Sandbox,
    Volume,
    project_name,
)
from .validate import validate

__all__ = ["load", "loads", "Manifest", "AgentSpec", "KernelSection", "KernelLLM", "KernelConnections", "Sandbox",
           "Limits", "Restart", "AgentLLM", "Readiness", "Volume", "ManifestError", "Problem", "Mark",
           "project_name"]


def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate the manifest at ``path``; relative paths in it resolve against its directory."""
    root, file = read(path)
    return validate(root, file, Path(path))


def loads(text: str, path: str | os.PathLike[str] = "manifest.yaml") -> Manifest:
    """Validate manifest ``text`` as if read from ``path`` (which need not exist)."""
    file = os.fspath(path)
    return validate(compose(text, file), file, Path(file))
