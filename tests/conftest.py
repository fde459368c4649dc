"""Shared fixtures: a real kernel per test, and no silent skips when privileges are required."""
from __future__ import annotations

import os

import pytest

from agentos.testing.kernel import KernelProcess

# tests/testing runs agent authors' test files through the pytest plugin; a non-root conftest
# may not name plugins.
pytest_plugins = ["pytester"]

REQUIRE_PRIVILEGED = os.environ.get("AGENTOS_REQUIRE_PRIVILEGED", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_PRIVILEGED and report.skipped and not hasattr(report, "wasxfail"):
        # In CI every test must run: a skip would hide a missing feature or privilege.
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under AGENTOS_REQUIRE_PRIVILEGED=1: {reason}"


@pytest.fixture
def kernel(tmp_path):
    """A kernel subprocess on a temp socket; must exit 0 and leave no socket behind."""
    k = KernelProcess(tmp_path / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()
