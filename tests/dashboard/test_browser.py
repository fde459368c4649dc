"""The dashboard in a real browser (Debian's chromium): the token, live agents, logs, an OOM
kill, THINK, dead letters, audit denials, and actions that go through the kernel's permissions.

Every wait polls the page (Playwright's ``expect``) with a generous limit; nothing is timed.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.errors import Timeout
from agentos.testing.kernel import KernelProcess
from tests.permissions.identities import NOBODY, run_as

from .conftest import DashboardProcess, Session, screenshot

ROOT = Path(__file__).parents[2]
SLEEPER = str(ROOT / "tests" / "processes" / "agents" / "sleeper.py")
PRINTER = str(ROOT / "tests" / "processes" / "agents" / "printer.py")
THINKER = str(Path(__file__).parent / "agents" / "thinker.py")
MEMORY_HOG = str(ROOT / "agents" / "examples" / "adversarial" / "memory_hog.py")
#: Generous: a loaded CI machine, never a speed claim.
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect
    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect


def row(page: Any, agent_id: str) -> Any:
    return page.locator(f'tr.agent[data-agent-id="{agent_id}"]')


def test_the_page_needs_its_token(browser: Any, root_dashboard: DashboardProcess, tmp_path: Path,
                                  expect: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        for url in (root_dashboard.base + "/agents", root_dashboard.base + "/?token=not-the-token",
                    root_dashboard.base + "/static/dashboard.js"):
            answer = page.goto(url)
            assert answer.status == 401, url
            expect(page.locator("h1")).to_contain_text("needs its token")
        answer = page.goto(root_dashboard.url)
        assert answer.status == 200
        assert page.url == root_dashboard.base + "/agents"  # the token left the address bar
        cookie, = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        # Signed in, an action without the CSRF token is still refused, and one from another origin.
        action = root_dashboard.base + "/action/kill"
        refused = context.request.post(action, form={"id": "x"})
        assert refused.status == 403 and refused.json()["code"] == "csrf"
        csrf = page.locator('meta[name="csrf"]').get_attribute("content")
        foreign = context.request.post(action, form={"id": "x"},
                                       headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        assert foreign.status == 403 and foreign.json()["message"] == "cross-origin request refused"
        # With both, the kernel answers (no such agent), proving the checks are what refused above.
        missing = context.request.post(action, form={"id": "000000000000"}, headers={"X-CSRF-Token": csrf})
        assert missing.status == 404 and missing.json()["code"] == "not_found"
    finally:
        context.close()
    # A page of another site rebound to 127.0.0.1 carries its own Host: refused before any token check.
    forged = urllib.request.Request(root_dashboard.url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.urlopen(forged, timeout=30)
    assert refusal.value.code == 421


def test_agents_appear_change_status_and_oom_kills_show(kernel: KernelProcess, root_session: Session,
                                                       tmp_path: Path, expect: Any) -> None:
    page = root_session.open("/agents")
    with Client(kernel.socket_path) as client:
        parent = client.spawn("planner", SLEEPER, project="demo", limits={"memory": "96Mi"})
        worker = client.spawn("worker", SLEEPER, project="demo")
        expect(row(page, parent["id"])).to_have_attribute("data-status", "running")
        expect(row(page, worker["id"])).to_have_attribute("data-status", "running")
        # The sampler has drawn the memory line once a second sample came.
        expect(row(page, parent["id"]).locator("svg.spark polyline").first).to_be_attached()
        # Its isolation report, as SPAWN answered it (LIST include: isolation), behind its summary.
        report = row(page, parent["id"]).locator("details pre")
        expect(report).to_contain_text('"isolation"')
        for key in parent["isolation"]:
            expect(report).to_contain_text(f'"{key}"')
        hog = client.spawn("hog", MEMORY_HOG, project="demo", limits={"memory": "48Mi"})
        expect(row(page, hog["id"])).to_have_attribute("data-status", "oom_killed")
        expect(row(page, hog["id"]).locator(".status")).to_contain_text("OOM kill")
        screenshot(page, tmp_path, "agents")
        client.kill(id=worker["id"])
        expect(row(page, worker["id"])).to_have_attribute("data-status", "killed")
        client.kill(id=parent["id"])
    page.close()


def test_logs_stream_and_are_searchable(kernel: KernelProcess, root_session: Session, tmp_path: Path,
                                        expect: Any) -> None:
    with Client(kernel.socket_path) as client:
        # It writes 40 lines over about 4 s: the page shows them as they come.
        printer = client.spawn("printer", PRINTER, args=["40", "0", "0.1"], project="logs")
        page = root_session.open(f"/logs?id={printer['id']}")
        lines = page.locator("#log .line")
        expect(lines.filter(has_text="line 0")).to_have_count(1)
        expect(lines.filter(has_text="line 39")).to_have_count(1)
        expect(page.locator("#log .ended")).to_have_count(1)
        expect(page.locator("#log-state")).to_have_text("ended")
        page.fill("#log-search", "LINE 3")
        expect(page.locator("#log .line:visible")).to_have_count(11)  # line 3, line 30..39
        screenshot(page, tmp_path, "logs")
        # A project's stream prefixes each line with its agent's name, later agents included.
        page.goto(f"{root_session.base}/logs?project=logs")
        expect(page.locator("#log .line").filter(has_text="printer | line 39")).to_have_count(1)
        client.spawn("printer2", PRINTER, args=["3", "0", "0"], project="logs")
        expect(page.locator("#log .line").filter(has_text="printer2 | line 2")).to_have_count(1)
        page.close()


def test_think_usage_and_dead_letters(kernel: KernelProcess, root_session: Session, tmp_path: Path,
                                      expect: Any) -> None:
    with Client(kernel.socket_path) as client:
        reply = client.think(prompt="Say hello to the dashboard.")
        assert reply.success, reply.error
        hello = client.hello()
        thinker = client.spawn("thinker", THINKER, args=["3"], project="llm", llm={"tokens": 400})
        assert client.wait(id=thinker["id"], timeout=60)["exit_code"] == 0
        page = root_session.open("/think")
        account = page.locator(f'tr[data-account="client:0:{hello["you"]["pid"]}"]')
        expect(account.locator(".tokens")).not_to_have_text("0")
        budgeted = page.locator(f'tr[data-account="agent:{thinker["id"]}"]')
        expect(budgeted.locator("svg.bar")).to_have_count(1)
        screenshot(page, tmp_path, "think")
        # Delivered once to a reader that left without ACK, with max_deliveries 1: a dead letter.
        client.register("dashboard-inbox")
        client.send("dashboard-inbox", {"job": 42})
        with Client(kernel.socket_path) as reader:
            reader.recv(timeout=5, name="dashboard-inbox", max_deliveries=1)
        with Client(kernel.socket_path) as reader, pytest.raises(Timeout):
            reader.recv(timeout=0, name="dashboard-inbox", max_deliveries=1)
        # Two messages wait in another mailbox: its depth (DEAD_LETTERS stats), beside the dead one.
        client.register("dashboard-queue")
        for job in (1, 2):
            client.send("dashboard-queue", {"job": job})
        page.goto(root_session.base + "/mail")
        expect(page.locator("main")).to_contain_text('{"job": 42}')
        expect(page.locator('tr[data-topic="mail.dead"]')).to_have_count(1)
        queue = page.locator('#mailboxes tr[data-mailbox$="dashboard-queue"]')
        expect(queue.locator(".depth")).to_have_text("2")
        expect(page.locator('#mailboxes tr[data-mailbox$="dashboard-inbox"] .dead')).to_have_text("1")
        screenshot(page, tmp_path, "mail")
        with Client(kernel.socket_path) as reader:
            for _ in range(2):
                reader.recv(timeout=5, name="dashboard-queue", ack=True)
        expect(queue).to_have_count(0)  # an emptied mailbox leaves the table
        page.close()


def test_a_denied_syscall_is_highlighted_in_the_audit(kernel: KernelProcess, root_session: Session,
                                                      nobody_session: Session, tmp_path: Path,
                                                      expect: Any) -> None:
    page = root_session.open("/audit")
    expect(page.locator("#audit-state")).to_have_text("streaming")
    expect(page.locator("#audit tbody tr").first).to_be_attached()  # the recent records came first
    refused = run_as(NOBODY, kernel.socket_path, lambda c: c.set_perms(["admin"], uid=NOBODY))
    assert refused.get("code") == "permission_denied", refused
    denied = page.locator('#audit tr.denied[data-op="SET_PERMS"]')
    expect(denied).to_have_count(1)
    expect(denied).to_contain_text(f"uid:{NOBODY}")
    page.check("#denials-only")
    expect(page.locator('#audit tbody tr[data-outcome="ok"]').first).to_be_hidden()
    screenshot(page, tmp_path, "audit")
    page.close()
    # AUDIT is an admin's: the other user's dashboard says the kernel refused it, and shows nothing.
    page = nobody_session.open("/audit")
    expect(page.locator("#audit-state")).to_contain_text("admin")
    expect(page.locator("#audit tbody tr")).to_have_count(0)
    page.close()


def test_actions_go_through_the_users_permissions(kernel: KernelProcess, nobody_session: Session,
                                                  tmp_path: Path, expect: Any) -> None:
    mine = run_as(NOBODY, kernel.socket_path, lambda c: c.spawn("mine", SLEEPER, project="team"))["ok"]
    with Client(kernel.socket_path) as client:
        roots = client.spawn("roots", SLEEPER, project="team")
        page = nobody_session.open("/agents")
        expect(page.locator(".kernel")).to_contain_text(f"uid {NOBODY}")
        expect(row(page, roots["id"])).to_have_attribute("data-status", "running")  # observe: seen
        mine_row = row(page, mine["id"])
        mine_row.locator('button[value="pause"]').click()
        expect(mine_row).to_have_attribute("data-status", "paused")
        expect(page.locator("#flash")).to_have_class("ok")
        mine_row.locator('button[value="resume"]').click()
        expect(mine_row).to_have_attribute("data-status", "running")
        mine_row.locator('button[value="kill"]').click()
        expect(mine_row).to_have_attribute("data-status", "killed")
        # Restart is START: a new process of the same agent, by this user.
        mine_row.locator('button[value="restart"]').click()
        restarted = page.locator('tr.agent[data-agent-name="mine"][data-status="running"]')
        expect(restarted).to_have_count(1)
        screenshot(page, tmp_path, "actions")
        # Root's agent: the button is there (nobody may observe it), the kernel refuses it.
        row(page, roots["id"]).locator('button[value="kill"]').click()
        expect(page.locator("#flash")).to_contain_text("refused (permission_denied)")
        expect(page.locator("#flash")).to_have_class("error")
        page.close()
        assert client.list_agents(name="team/roots")[-1]["status"] == "running"
        # The CLI as nobody gets the same answer for the same KILL.
        cli = run_as(NOBODY, kernel.socket_path, lambda c: c.kill(id=roots["id"]))
        assert cli.get("code") == "permission_denied", cli
        client.kill(id=roots["id"])
        for agent in client.list_agents(name="team/mine", status="running"):
            client.kill(id=agent["id"])

