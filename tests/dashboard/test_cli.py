"""``agentos dashboard`` as a command: where it may listen, and that it outlives a kernel restart."""
from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from agentos.cli.main import main as agentos_main
from agentos.dashboard.views import DOWN
from agentos.testing.kernel import KernelProcess

from .conftest import DashboardProcess


def test_it_listens_on_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    for listen in ("0.0.0.0:0", "192.168.1.2:8080", "[::]:0", "example.com:80", "127.0.0.1", "127.0.0.1:99999"):
        assert agentos_main(["dashboard", "--listen", listen]) == 2
        assert "--listen" in capsys.readouterr().err


def test_it_waits_for_a_kernel_that_restarts(tmp_path: Path) -> None:
    """The kernel stops under a running dashboard: its pages say it is down and reconnecting
    (503, and /status for the banner), actions are refused, and once a kernel serves the socket
    again the same dashboard shows its agents, without a restart of its own."""
    kernel = KernelProcess(tmp_path / "k").start()
    dashboard = None
    try:
        dashboard = DashboardProcess(kernel, tmp_path / "dashboard.log")
        browser = _signed_in(dashboard.url)
        assert _get(browser, dashboard.base + "/status") == (200, '{"kernel": "up", "down_since": null}')
        kernel.stop_checked()

        assert _poll(lambda: json.loads(_get(browser, dashboard.base + "/status")[1])["kernel"] == "down")
        status, page = _get(browser, dashboard.base + "/agents")
        assert status == 503 and DOWN in page and 'id="kernel-state"' in page
        status, partial = _get(browser, dashboard.base + "/partial/mail")
        assert status == 503 and DOWN in partial
        csrf = re.search(r'<meta name="csrf" content="([^"]+)"', page)
        assert csrf is not None
        refused = urllib.request.Request(dashboard.base + "/action/kill", data=b"id=x", method="POST",
                                         headers={"X-CSRF-Token": csrf.group(1)})
        with pytest.raises(urllib.error.HTTPError) as answer:
            browser.open(refused, timeout=30)
        assert answer.value.code == 503 and json.load(answer.value)["code"] == "unavailable"
        assert dashboard.proc.poll() is None

        kernel = KernelProcess(tmp_path / "k").start()
        with kernel.client() as client:
            agent = client.spawn("after-restart", command=["sleep", "60"])
        assert _poll(lambda: _get(browser, dashboard.base + "/status")[1].startswith('{"kernel": "up"'))
        assert _poll(lambda: agent["id"] in _get(browser, dashboard.base + "/partial/agents")[1])
        with kernel.client() as client:
            client.kill(id=agent["id"], grace=0)
    finally:
        if dashboard is not None:
            dashboard.stop()
        kernel.stop_checked()
    assert "reconnecting" in dashboard.log() and "connected to the kernel again" in dashboard.log()


def _signed_in(url: str) -> urllib.request.OpenerDirector:
    """A client holding the dashboard's cookie, as a browser after its first visit."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(url, timeout=30) as response:
        assert response.status == 200
    return opener


def _get(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _poll(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.1)
    return True
