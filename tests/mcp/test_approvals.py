"""Approvals that time out, and approvals that outlive their kernel (both twins)."""
from __future__ import annotations

import pytest

from agentos.testing import FakeGemini, call_reply, text_reply
from tests.mcp.routing_fixtures import TWINS, chunks, start
from tests.mcp.test_routing import _approval, responses

WRITE = {"tool": "notes.write_note", "approve": True}


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_an_approval_nobody_gives_times_out_as_a_denial(twin: str, tmp_path) -> None:
    with FakeGemini().running_in_thread() as fake:
        kernel = start(twin, tmp_path, fake, approval_timeout="1s")
        try:
            fake.script(call_reply(("notes.write_note", {"name": "late", "text": "."})), text_reply("OK."))
            with kernel.client() as c:
                agent = kernel.actor(c, "waiter", {"do": "think", "prompt": "save"}, [WRITE])
                steps = chunks(kernel.outcome(c, agent))
                assert c.approvals() == []
            assert "awaiting_approval" in steps[1]
            assert steps[2] == {"tool_result": {"tool": "notes.write_note", "error": {
                "type": "timed_out", "message": "a human did not approve notes.write_note: nobody approved "
                                                "it in time"}}}
            assert responses(fake.requests[1].body)[0]["response"]["error"]["type"] == "timed_out"
            (decision,) = kernel.audit("APPROVAL")
            assert decision["outcome"] == "timed_out" and decision["args"]["decided_by"] == "timeout"
            assert not (tmp_path / "notes" / "late.txt").exists()
        finally:
            kernel.stop()


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_a_pending_approval_survives_a_kernel_restart_and_serves_the_same_call(twin: str, tmp_path) -> None:
    call = ("notes.write_note", {"name": "kept", "text": "after the restart"})
    with FakeGemini().running_in_thread() as fake:
        kernel = start(twin, tmp_path, fake, approval_timeout="10m")
        try:
            fake.script(call_reply(call), text_reply("never seen"))
            with kernel.client() as c:
                first = kernel.actor(c, "keeper", {"do": "think", "prompt": "save"}, [WRITE])
            pending = _approval(kernel, first["id"])
            kernel.process.restart()
            kernel.wait_servers(("notes",))
            with kernel.client() as c:
                (still,) = c.approvals()
                assert still["id"] == pending["id"] and still["agent"] == first["id"]
                assert c.approve(still["id"])["status"] == "approved"
                fake.reset()
                fake.script(call_reply(call), text_reply("Saved."))
                again = kernel.actor(c, "keeper", {"do": "think", "prompt": "save"}, [WRITE])
                steps = chunks(kernel.outcome(c, again))
                assert c.approvals() == []
            assert [next(iter(s)) for s in steps] == ["tool_call", "tool_result", "text", "final", "success"]
            assert (tmp_path / "notes" / "kept.txt").read_text() == "after the restart"
        finally:
            kernel.stop()

