"""pytest fixtures for testing agents: ``kernel``, a real kernel, and ``fake_gemini``, its model.

Installing agentos registers this module as the ``agentos`` pytest plugin (the ``pytest11``
entry point), so a test only names the fixtures::

    from agentos.testing import text_reply

    def test_summariser(kernel, fake_gemini):
        fake_gemini.script(text_reply("Cats sleep a lot."))
        with kernel.client() as client:
            client.spawn(name="summariser", script="agents/summariser.py")
            assert client.wait(name="summariser", timeout=30)["exit_code"] == 0
            assert "Cats sleep a lot." in client.logs("summariser")

``@pytest.mark.agentos_kernel(env={...}, args=[...])`` adds environment variables and
``agentos kernel`` options. ``-p no:agentos`` turns the plugin off. pytest imports this module
only when it runs: ``import agentos.testing`` does not import pytest.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_gemini import FakeGemini
from .kernel import KernelProcess, start_against

#: The ``kernel`` fixture's process, for the report of a failed test.
_KERNEL = pytest.StashKey[KernelProcess]()
#: As much of each log as a failed test's report shows: the end, where the failure is.
_LOG_TAIL = 64 * 1024


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "agentos_kernel(env=None, args=None): environment variables "
                                       "and `agentos kernel` options for the kernel fixture")


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A fake Gemini API on 127.0.0.1 (``agentos.testing.FakeGemini``) answering the ``kernel``
    fixture's THINKs: ``script()`` its replies, read ``requests``. Stopped after the test."""
    with FakeGemini().running_in_thread() as fake:
        yield fake


@pytest.fixture
def kernel(request: pytest.FixtureRequest, fake_gemini: FakeGemini,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[KernelProcess]:
    """A kernel (``agentos.testing.KernelProcess``) on a private socket and state dir, its model
    ``fake_gemini``, whatever keys this environment holds: a test never reaches a real model.

    ``fake_gemini.requests`` holds only the test's requests (the kernel's start-up check of its
    endpoint is left out). ``AGENTOS_SOCKET`` names the kernel's socket during the test, so code
    under test that opens ``agentos.Client()`` reaches it. After the test, pass or fail, the
    kernel is stopped with its agents and its directory removed; a failed test's report shows
    the kernel's log and its agents'.
    """
    marker = request.node.get_closest_marker("agentos_kernel")
    options = marker.kwargs if marker else {}
    env = {"AGENTOS_LLM_PROVIDER": "gemini", "AGENTOS_GEMINI_BASE_URL": fake_gemini.url,
           "GEMINI_API_KEY": fake_gemini.api_key, "GOOGLE_API_KEY": "",
           # Scripted 429s and 503s are retried in milliseconds, not the seconds a real API needs.
           "AGENTOS_LLM_BACKOFF_BASE": "0.01", **options.get("env", {})}
    # Short, not under pytest's basetemp: a Unix socket's path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="agentos-test-"))
    process = KernelProcess(root, env=env, args=options.get("args"))
    request.node.stash[_KERNEL] = process
    try:
        start_against(process, fake_gemini)
        monkeypatch.setenv("AGENTOS_SOCKET", str(process.socket_path))
        yield process
    finally:
        try:
            process.stop()
        finally:
            _remove(root)


def _remove(root: Path) -> None:
    """Remove the kernel's directory, unless something is still mounted in it: rmtree would
    descend into the mount and delete what it shows."""
    inside = str(root) + "/"
    with open("/proc/self/mountinfo") as table:
        mounted = [line.split()[4] for line in table if line.split()[4].startswith(inside)]
    if mounted:
        raise RuntimeError(f"the kernel left mounts in {root}, which is kept: {mounted}")
    shutil.rmtree(root)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    process = item.stash.get(_KERNEL, None)
    if process is None or call.excinfo is None or call.when != "call":
        return
    # Added before pytest builds the report, so its failure shows them (and the directory
    # holding them is gone once the test has ended).
    item.add_report_section("call", "agentos kernel log", process.log()[-_LOG_TAIL:])
    logs = process.state_dir / "logs"
    for path in sorted(logs.rglob("*.log")):
        text = path.read_text(errors="replace")[-_LOG_TAIL:]
        item.add_report_section("call", f"agentos agent log {path.relative_to(logs)}", text)
