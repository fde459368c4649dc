"""The dashboard's browser tests: one kernel, two dashboards and one Debian chromium per module.

The kernel runs as root with a fake Gemini; it admits another uid (``nobody``) with
``spawn``, ``kill`` and ``observe``: that user sees root's agents but may not touch them. One
dashboard runs as root (an admin: AUDIT answers it), one as ``nobody``, each as a real
``agentos dashboard`` process. The browser is Debian's chromium, installed with apt-get by the
fixture when missing (as CI does, as root), driven by Playwright without any browser download.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess
from tests.conftest import REQUIRE_PRIVILEGED
from tests.permissions.identities import LAUNCHER, NOBODY
from tests.unprivileged import unprivileged_env, wrapper

#: Where each view's screenshot is also written when set (docs/img/ keeps the README's).
SCREENSHOTS = os.environ.get("AGENTOS_DASHBOARD_SCREENSHOTS")
VIEWPORT = {"width": 1280, "height": 640}
#: Root's kernel config: nobody may spawn its own agents, kill them, and see everyone's.
SECTIONS = {"permissions": {"uids": {str(NOBODY): ["spawn", "kill", "observe", "message"]}}}


def unavailable(reason: str) -> NoReturn:
    """No browser means no test: a failure where CI requires every test to run."""
    if REQUIRE_PRIVILEGED:
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


def system_chromium() -> str:
    """Debian's chromium, installed now (apt-get, as root) if missing."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        unavailable("no chromium on PATH, and only root can apt-get install it")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            unavailable(f"{' '.join(step)} failed ({done.returncode}): {done.stderr[-2000:]}")
    sys.stderr.write(f"\ninstalled Debian's chromium in {time.monotonic() - started:.0f}s\n")
    found = shutil.which("chromium")
    if not found:
        unavailable("apt-get installed chromium but no chromium is on PATH")
    return found


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` now (its children's children included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module; none of its processes outlives it."""
    executable = system_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"playwright is not installed (pip install '.[test]'): {exc}")
    before = descendants(os.getpid())
    playwright = sync_playwright().start()
    try:
        # Chromium's own sandbox needs an unprivileged user; as root (CI) it refuses to start without this.
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
    except BaseException:
        playwright.stop()
        raise
    started = descendants(os.getpid()) - before
    try:
        yield launched
    finally:
        launched.close()
        playwright.stop()
        deadline = time.monotonic() + 30
        while any(map(alive, started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in started if alive(pid)]
        assert not left, f"browser processes outlived the tests: {left}"


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeGemini]:
    with FakeGemini().running_in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def kernel(fake_llm: FakeGemini) -> Iterator[KernelProcess]:
    """Root's kernel, its socket reachable by nobody (the kernel's permissions decide)."""
    root = Path(tempfile.mkdtemp(prefix="agentos-dash-"))
    root.chmod(0o755)
    config = root / "sections.json"
    config.write_text(json.dumps(SECTIONS))
    env = {"AGENTOS_GEMINI_BASE_URL": fake_llm.url, "GEMINI_API_KEY": fake_llm.api_key,
           "AGENTOS_GEMINI_MODEL": "gemini-2.5-flash", "GOOGLE_API_KEY": ""}
    process = KernelProcess(root / "k", command=[sys.executable, str(LAUNCHER), str(config)],
                            args=["--socket-mode", "666"], env=env)
    try:
        process.start()
        try:
            yield process
        finally:
            status = process.stop()
        log = process.log()
        assert status == 0, f"kernel exited with {status}:\n{log}"
        assert "Traceback" not in log, f"kernel logged a traceback:\n{log}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


class DashboardProcess:
    """``agentos dashboard`` for ``kernel``, run by ``prefix`` (another uid's wrapper) if given."""

    def __init__(self, kernel: KernelProcess, log: Path, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        argv = [*(prefix or []), sys.executable, "-m", "agentos", "dashboard", "--socket",
                str(kernel.socket_path), "--listen", "127.0.0.1:0", "--interval", "0.5s"]
        self.log_path = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr,
                                         env=env or dict(os.environ), start_new_session=True)
        self.url = self._read_url(60.0)
        self.base = self.url.split("/?", 1)[0]

    def _read_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.stop()
                raise AssertionError(f"the dashboard printed no URL in {timeout}s:\n{self.log()}")
        line = self.proc.stdout.readline().decode()
        assert line.startswith("agentos dashboard: http://127.0.0.1:"), (line, self.log())
        return line.split(": ", 1)[1].strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        assert "Traceback" not in self.log(), self.log()


@pytest.fixture(scope="module")
def root_dashboard(kernel: KernelProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProcess]:
    dashboard = DashboardProcess(kernel, tmp_path_factory.mktemp("dash") / "root.log")
    try:
        yield dashboard
    finally:
        dashboard.stop()


@pytest.fixture(scope="module")
def nobody_dashboard(kernel: KernelProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProcess]:
    dashboard = DashboardProcess(kernel, tmp_path_factory.mktemp("dash") / "nobody.log",
                                 prefix=wrapper(NOBODY, NOBODY), env=unprivileged_env(os.environ))
    try:
        yield dashboard
    finally:
        dashboard.stop()


@dataclass
class Session:
    """A browser context holding a dashboard's cookie (it visited the printed URL once)."""

    context: Any
    base: str

    def open(self, path: str) -> Any:
        page = self.context.new_page()
        page.goto(self.base + path)
        return page


@contextmanager
def signed_in(browser: Any, dashboard: DashboardProcess) -> Iterator[Session]:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.new_page().goto(dashboard.url)
        yield Session(context, dashboard.base)
    finally:
        context.close()


@pytest.fixture(scope="module")
def root_session(browser: Any, root_dashboard: DashboardProcess) -> Iterator[Session]:
    with signed_in(browser, root_dashboard) as session:
        yield session


@pytest.fixture(scope="module")
def nobody_session(browser: Any, nobody_dashboard: DashboardProcess) -> Iterator[Session]:
    with signed_in(browser, nobody_dashboard) as session:
        yield session


def screenshot(page: Any, tmp_path: Path, view: str) -> None:
    """The view's PNG in the test's directory, and in AGENTOS_DASHBOARD_SCREENSHOTS if set."""
    page.screenshot(path=str(tmp_path / f"dashboard-{view}.png"))
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"dashboard-{view}.png"))
