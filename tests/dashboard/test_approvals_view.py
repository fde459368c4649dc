"""The Approvals view in a real browser: a THINK with ``tools: "mcp"`` waits for a human, the
page lists it, Approve lets the call run, Deny's reason reaches the model, and a user who may not
settle it gets the kernel's refusal.

The kernel is tests/mcp's (the example notes server, sandboxed, its THINKs answered by the
module's fake Gemini), admitting ``nobody`` as tests/dashboard's kernel does.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentos import Client
from agentos.testing import FakeGemini, call_reply, text_reply
from tests.mcp.routing_fixtures import ACTOR, McpKernel, chunks, notes_server
from tests.mcp.test_routing import _approval, responses

from .conftest import SECTIONS, Session, screenshot

WRITE = {"tool": "notes.write_note", "approve": True}
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect
    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect


@pytest.fixture(scope="module")
def mcp_kernel(fake_llm: FakeGemini) -> Iterator[McpKernel]:
    root = Path(tempfile.mkdtemp(prefix="agentos-dash-mcp-"))
    root.chmod(0o755)  # nobody's dashboard reaches the socket; the kernel's permissions decide
    try:
        kernel = McpKernel(root, fake_llm, {"notes": notes_server(root / "notes")}, "compiled",
                           approval_timeout="10m")
        manifest = root / "agentos.yaml"
        # tests/dashboard's kernel: nobody may spawn, kill and observe, and reach the socket.
        written = yaml.safe_load(manifest.read_text())
        written["kernel"].update(SECTIONS)
        manifest.write_text(yaml.safe_dump(written))
        kernel.process.args += ["--socket-mode", "666"]
        kernel.start(("notes",))
        try:
            yield kernel
        finally:
            kernel.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def kernel(mcp_kernel: McpKernel) -> Any:
    """The dashboards of conftest.py serve this kernel."""
    return mcp_kernel.process


def waiter(kernel: McpKernel, client: Client, name: str, note: dict[str, str], *replies: Any) -> dict[str, Any]:
    """An agent whose THINK asks to write ``note`` (a call needing approval), then gets ``replies``."""
    kernel.fake.reset()
    kernel.fake.script(call_reply(("notes.write_note", note)), *replies)
    return client.spawn(name, str(ACTOR), args=[json.dumps({"do": "think", "prompt": "save"})], tools=[WRITE],
                        capabilities=["think"], readonly_paths=[str(ACTOR.parent)])


def listed(page: Any, agent_id: str) -> Any:
    return page.locator("tr.approval").filter(has_text=agent_id)


def test_approve_in_the_page_lets_the_think_finish(mcp_kernel: McpKernel, root_session: Session,
                                                  tmp_path: Path, expect: Any) -> None:
    page = root_session.open("/approvals")
    expect(page.locator("main .empty")).to_contain_text("No tool call is waiting")
    with mcp_kernel.client() as c:
        agent = waiter(mcp_kernel, c, "writer", {"name": "plan", "text": "ship it"}, text_reply("Saved."))
        row = listed(page, agent["id"])  # the live refresh brings it; nothing reloads the page
        expect(row).to_have_count(1)
        expect(row).to_contain_text("writer")
        expect(row).to_contain_text("notes.write_note")
        expect(row.locator("pre.arguments")).to_contain_text('"text": "ship it"')
        expect(row.locator("td").nth(4)).to_contain_text("in 9m")  # deadline: approval_timeout 10m
        screenshot(page, tmp_path, "approvals")
        row.locator('button[value="approve"]').click()
        expect(page.locator("#flash")).to_have_class("ok")
        expect(page.locator("#flash")).to_contain_text("approved: notes.write_note for writer")
        expect(row).to_have_count(0)
        steps = chunks(mcp_kernel.outcome(c, agent))
    assert next(iter(steps[1])) == "awaiting_approval"
    assert steps[2]["tool_result"]["text"] == "saved plan"
    assert {"text": "Saved."} in steps and steps[-1]["success"]
    assert (mcp_kernel.root / "notes" / "plan.txt").read_text() == "ship it"
    (decision,) = [r for r in mcp_kernel.audit("APPROVAL") if r["agent"] == agent["id"]]
    assert decision["outcome"] == "approved" and decision["uid"] == 0  # the dashboard's user
    page.close()


def test_deny_with_a_reason_reaches_the_model(mcp_kernel: McpKernel, root_session: Session, expect: Any) -> None:
    page = root_session.open("/approvals")
    with mcp_kernel.client() as c:
        agent = waiter(mcp_kernel, c, "refused", {"name": "x", "text": "y"}, text_reply("Understood."))
        row = listed(page, agent["id"])
        reason = row.locator('input[name="reason"]')
        reason.fill("not today")
        # The row's age redraws it every second: what was typed is still there after a redraw.
        waited = row.locator("td").nth(3).inner_text()
        expect(row.locator("td").nth(3)).not_to_have_text(waited)
        expect(reason).to_have_value("not today")
        row.locator('button[value="deny"]').click()
        expect(page.locator("#flash")).to_contain_text("denied: notes.write_note for refused")
        end = chunks(mcp_kernel.outcome(c, agent))[-1]
    error = responses(mcp_kernel.fake.requests[1].body)[0]["response"]["error"]
    assert error == {"type": "denied", "message": "a human did not approve notes.write_note: not today"}
    assert end["tool_calls"][0]["error"]["type"] == "denied"
    assert not (mcp_kernel.root / "notes" / "x.txt").exists()
    page.close()


def test_a_user_who_may_not_settle_it_gets_the_kernels_refusal(mcp_kernel: McpKernel, nobody_session: Session,
                                                              expect: Any) -> None:
    with mcp_kernel.client() as c:
        agent = waiter(mcp_kernel, c, "roots", {"name": "z", "text": "z"}, text_reply("Fine."))
        pending = _approval(mcp_kernel, agent["id"])
        page = nobody_session.open("/approvals")
        # nobody may observe root's agents, but only their owner or an admin may settle their
        # calls, and the kernel lists a user only what it may settle: nothing here.
        expect(page.locator("main .empty")).to_contain_text("No tool call is waiting")
        # A stale or guessed id, posted as the page's own button would (CSRF token and all).
        page.evaluate("""(id) => {
            const form = document.createElement("form");
            form.method = "post"; form.action = "/approval/approve"; form.className = "action";
            form.innerHTML = '<input type="hidden" name="id"><button type="submit" value="approve">approve</button>';
            form.elements.id.value = id;
            document.body.appendChild(form);
        }""", pending["id"])
        page.locator('body > form.action button').click()
        flash = page.locator("#flash")
        expect(flash).to_have_class("error")
        expect(flash).to_contain_text(f"refused (not_found): no approval '{pending['id']}' that you may see")
        page.close()
        assert [a["id"] for a in c.approvals()] == [pending["id"]]  # still waiting
        c.deny(pending["id"], reason="cleanup")
        assert chunks(mcp_kernel.outcome(c, agent))[-1]["tool_calls"][0]["error"]["type"] == "denied"
