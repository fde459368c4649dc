"""Without the agentos[otel] extra: a kernel imports none of it and serves as always, OTEL_*
variables meant for other programs only log that traces and metrics are off, and asking for traces or
metrics stops the kernel at start with how to install them.

The kernel runs under ``blocked_kernel.py``, which makes every import of OpenTelemetry or
prometheus_client fail (as if not installed) and records each attempt in a file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

from .conftest import llm_env

BLOCKED_KERNEL = Path(__file__).parent / "blocked_kernel.py"


def _kernel(tmp_path: Path, fake: FakeGemini, env: dict[str, str]) -> KernelProcess:
    attempts = tmp_path / "attempts"
    return KernelProcess(tmp_path / "k", env={**llm_env(fake), "BLOCKED_IMPORTS_LOG": str(attempts), **env},
                         command=[sys.executable, str(BLOCKED_KERNEL), "kernel"])


def test_nothing_is_imported_and_think_is_served(tmp_path: Path, fake: FakeGemini) -> None:
    kernel = _kernel(tmp_path, fake, {}).start()
    try:
        with kernel.client() as client:
            assert client.hello()["capabilities"]["telemetry"] == {
                "traces": False, "metrics": None, "metrics_token_file": None, "otlp_metrics": False}
            assert client.think("hello").error is None
    finally:
        kernel.stop_checked()
    assert not (tmp_path / "attempts").exists(), (tmp_path / "attempts").read_text()


def test_otel_variables_alone_leave_traces_off(tmp_path: Path, fake: FakeGemini) -> None:
    kernel = _kernel(tmp_path, fake, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}).start()
    try:
        with kernel.client() as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            assert telemetry["traces"] is False and telemetry["otlp_metrics"] is False
            assert client.think("hello").error is None
    finally:
        kernel.stop_checked()
    assert "traces are off (pip install 'agentos[otel]')" in kernel.log()
    assert "metrics are off (pip install 'agentos[otel]')" in kernel.log()


@pytest.mark.parametrize("option", [["--otel"], ["--metrics", "127.0.0.1:0"]])
def test_asking_for_them_stops_the_kernel(tmp_path: Path, option: list[str]) -> None:
    result = subprocess.run([sys.executable, str(BLOCKED_KERNEL), "kernel", "--socket", str(tmp_path / "s"),
                             "--state-dir", str(tmp_path / "state"), *option],
                            capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "BLOCKED_IMPORTS_LOG": str(tmp_path / "a")})
    assert result.returncode != 0
    assert "pip install 'agentos[otel]'" in result.stderr, result.stderr
    assert not (tmp_path / "s").exists()
