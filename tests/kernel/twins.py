"""The reactor's two twins, for the tests that build a Reactor.

Both are under test in every run: ``AGENTOS_NO_EXTENSIONS`` picks the twin the kernel runs,
not the ones that exist, so the compiled one is imported by its own name rather than through
``_extensions.load_twin`` (test_reactor_twins checks that it is the built extension).
"""
from __future__ import annotations

from types import ModuleType

from agentos._fast import reactor as compiled_reactor
from agentos.kernel import reactor as python_reactor

REACTOR_TWINS: dict[str, ModuleType] = {"compiled": compiled_reactor, "python": python_reactor}
