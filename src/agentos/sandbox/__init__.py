"""Sandboxed agent processes: namespaces, read-only views, seccomp, Landlock, fast spawn.

``Launcher`` starts agents from a ``SandboxSpec`` and returns ``Launched``; every
failure before the agent runs is a ``SandboxError`` naming the step. ``probe()``
says what isolation this host supports. See docs/sandbox.md for what each layer
guarantees and what it does not.
"""
from agentos.sandbox.launcher import Launcher
from agentos.sandbox.probe import HostSupport, probe
from agentos.sandbox.spec import Launched, SandboxError, SandboxSpec

__all__ = ["HostSupport", "Launched", "Launcher", "SandboxError", "SandboxSpec", "probe"]
