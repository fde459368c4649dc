"""``agentos dashboard`` as a command: where it may listen, and that it ends with its kernel."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentos.cli.main import main as agentos_main
from agentos.testing.kernel import KernelProcess

from .conftest import DashboardProcess


def test_it_listens_on_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    for listen in ("0.0.0.0:0", "192.168.1.2:8080", "[::]:0", "example.com:80", "127.0.0.1", "127.0.0.1:99999"):
        assert agentos_main(["dashboard", "--listen", listen]) == 2
        assert "--listen" in capsys.readouterr().err


def test_it_ends_when_its_kernel_does(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k").start()
    try:
        dashboard = DashboardProcess(kernel, tmp_path / "dashboard.log")
    finally:
        kernel.stop_checked()
    assert dashboard.proc.wait(60) == 1
    assert "closed" in dashboard.log(), dashboard.log()
    dashboard.stop()
