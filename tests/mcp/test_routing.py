"""THINK with tools "mcp" against the fake Gemini and the example Python MCP server, in both twins:
the loop, a refused tool, allowlists narrowing down the tree, approvals granted, denied and timed
out (and who may not approve), and a server crashing mid-call."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agentos.testing import FakeGemini, call_reply, text_reply
from tests.mcp.routing_fixtures import TWINS, McpKernel, chunks, start


@pytest.fixture(scope="module", params=sorted(TWINS))
def notes_kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpKernel]:
    with FakeGemini().running_in_thread() as fake:
        kernel = start(request.param, tmp_path_factory.mktemp("mcp"), fake, approval_timeout="1m")
        try:
            yield kernel
        finally:
            kernel.stop()


@pytest.fixture
def kernel(notes_kernel: McpKernel) -> McpKernel:
    notes_kernel.fake.reset()
    return notes_kernel


def responses(body: dict) -> list[dict]:
    """The function responses the kernel sent back in a model request."""
    return [p["functionResponse"] for p in body["contents"][-1]["parts"] if "functionResponse" in p]


def test_the_kernel_runs_the_tool_loop(kernel: McpKernel) -> None:
    kernel.fake.script(call_reply(("notes.add", {"a": 2, "b": 40})), text_reply("It is 42."))
    with kernel.client() as c:
        agent = kernel.actor(c, "adder", {"do": "think", "prompt": "2 + 40?"}, ["notes.add", "notes.list_*"])
        lines = kernel.outcome(c, agent)
    *steps, end = chunks(lines)
    assert steps == [{"tool_call": {"tool": "notes.add", "args": {"a": 2, "b": 40}}},
                     {"tool_result": {"tool": "notes.add", "text": "42", "structured": {"result": 42}}},
                     {"text": "It is 42."}, {"final": {"success": True, "tool_calls": 1}}]
    assert end["success"] and end["tool_calls"] == [{"tool": "notes.add", "args": {"a": 2, "b": 40},
                                                     "error": None}]
    first, second = (r.body for r in kernel.fake.requests)
    offered = sorted(f["name"] for f in first["tools"][0]["functionDeclarations"])
    assert offered == ["notes.add", "notes.list_notes"], "exactly the agent's tools"
    assert responses(second) == [{"name": "notes.add", "response": {"text": "42", "structured": {"result": 42}},
                                  **({"id": responses(second)[0]["id"]} if "id" in responses(second)[0] else {})}]
    assert second["contents"][1]["role"] == "model", "the model's call went back before its result"
    calls = [r for r in kernel.audit("TOOL_CALL") if r["agent"] == agent["id"]]
    assert [(r["outcome"], r["args"]["tool"]) for r in calls] == [("ok", "notes.add")]


def test_a_tool_outside_the_list_is_refused_in_words_the_model_reads(kernel: McpKernel) -> None:
    kernel.fake.script(call_reply(("notes.read_file", {"path": "/etc/hostname"})), text_reply("I may not."))
    with kernel.client() as c:
        agent = kernel.actor(c, "snoop", {"do": "think", "prompt": "read it"}, ["notes.add"])
        end = chunks(kernel.outcome(c, agent))[-1]
    refused = responses(kernel.fake.requests[1].body)[0]["response"]["error"]
    assert refused["type"] == "permission_denied" and "notes.read_file" in refused["message"]
    assert end["tool_calls"][0]["error"]["type"] == "permission_denied"
    (record,) = [r for r in kernel.audit("TOOL_CALL") if r["agent"] == agent["id"]]
    assert record["outcome"] == "permission_denied" and record["args"]["tool"] == "notes.read_file"


def test_an_agent_without_tools_is_offered_none(kernel: McpKernel) -> None:
    kernel.fake.script(call_reply(("notes.add", {"a": 1, "b": 1})), text_reply("no"))
    with kernel.client() as c:
        agent = kernel.actor(c, "toolless", {"do": "think", "prompt": "add"}, [])
        kernel.outcome(c, agent)
    assert "tools" not in kernel.fake.requests[0].body
    assert responses(kernel.fake.requests[1].body)[0]["response"]["error"]["type"] == "permission_denied"


def test_a_child_never_gets_a_tool_its_parent_lacks(kernel: McpKernel) -> None:
    with kernel.client() as c:
        wider = kernel.actor(c, "wider", {"do": "spawn", "tools": ["notes.*"]}, ["notes.add"],
                             capabilities=("think", "spawn"))
        narrower = kernel.actor(c, "narrower", {"do": "spawn", "tools": ["notes.add"]}, ["notes.a*"],
                                capabilities=("think", "spawn"))
        approval = kernel.actor(c, "dropper", {"do": "spawn", "tools": ["notes.add"]},
                                [{"tool": "notes.add", "approve": True}], capabilities=("think", "spawn"))
        refused, allowed = kernel.outcome(c, wider)[0], kernel.outcome(c, narrower)[0]
        kept = kernel.outcome(c, approval)[0]
        with pytest.raises(Exception, match="no MCP server 'web'"):
            c.spawn("unknown", command=["/bin/true"], tools=["web.fetch"])
    assert refused["spawn_error"] == "permission_denied" and "notes.*" in refused["message"]
    assert "spawned" in allowed and "spawned" in kept


def _approval(kernel: McpKernel, agent_id: str) -> dict:
    with kernel.client() as c:
        give_up = time.monotonic() + 60
        while not (pending := [a for a in c.approvals() if a["agent"] == agent_id]):
            assert time.monotonic() < give_up, kernel.process.log()[-3000:]
            time.sleep(0.05)
    return pending[0]


def test_an_approval_granted_by_the_owner_lets_the_call_run(kernel: McpKernel) -> None:
    kernel.fake.script(call_reply(("notes.write_note", {"name": "plan", "text": "ship it"})), text_reply("Saved."))
    with kernel.client() as c:
        agent = kernel.actor(c, "writer", {"do": "think", "prompt": "save", "attack": True},
                             [{"tool": "notes.write_note", "approve": True}], capabilities=("think", "spawn"))
        pending = _approval(kernel, agent["id"])
        assert pending["tool"] == "notes.write_note" and pending["arguments"] == {"name": "plan", "text": "ship it"}
        # The agent tries to approve its own call, and so does its child: both refused.
        give_up = time.monotonic() + 60
        while "child" not in c.logs(id=agent["id"]):
            assert time.monotonic() < give_up
            time.sleep(0.05)
        approved = c.approve(pending["id"], reason="looks fine")
        lines = kernel.outcome(c, agent)
    assert approved["status"] == "approved" and approved["decided_by"]["uid"] == 0
    assert {"self_approve": "permission_denied"} in lines
    child = next(line["child"] for line in lines if "child" in line)
    # Its child does not even see the parent's approval; the approval was still pending after both.
    assert '"child_approve": "not_found"' in child
    steps = chunks(lines)
    assert steps[1] == {"awaiting_approval": {"id": pending["id"], "tool": "notes.write_note",
                                              "args": {"name": "plan", "text": "ship it"},
                                              "expires_at": pending["expires_at"]}}
    assert steps[2]["tool_result"]["text"] == "saved plan"
    assert (kernel.root / "notes" / "plan.txt").read_text() == "ship it"
    (decision,) = [r for r in kernel.audit("APPROVAL") if r["args"]["id"] == pending["id"]]
    assert decision["outcome"] == "approved" and decision["uid"] == 0 and decision["args"]["reason"] == "looks fine"


def test_a_denied_call_tells_the_model_why(kernel: McpKernel) -> None:
    kernel.fake.script(call_reply(("notes.write_note", {"name": "x", "text": "y"})), text_reply("Understood."))
    with kernel.client() as c:
        agent = kernel.actor(c, "denied", {"do": "think", "prompt": "save"},
                             [{"tool": "notes.*", "approve": True}])
        pending = _approval(kernel, agent["id"])
        listed = cli(kernel, "approvals")
        denied = cli(kernel, "deny", pending["id"], "--reason", "not today")
        with pytest.raises(Exception, match="already denied"):
            c.approve(pending["id"])
        end = chunks(kernel.outcome(c, agent))[-1]
    row = next(line for line in listed.splitlines() if line.startswith(pending["id"]))
    assert row.split()[1:4] == ["denied", "notes.write_note", '{"name":'], listed
    assert denied == f"{pending['id']} denied: notes.write_note for denied\n"
    error = responses(kernel.fake.requests[1].body)[0]["response"]["error"]
    assert error == {"type": "denied", "message": "a human did not approve notes.write_note: not today"}
    assert end["tool_calls"][0]["error"]["type"] == "denied"
    assert not (kernel.root / "notes" / "x.txt").exists()


def cli(kernel: McpKernel, *args: str) -> str:
    """``agentos ARGS`` against the kernel: its output (exit 0 checked)."""
    done = subprocess.run([sys.executable, "-m", "agentos", *args, "--socket", str(kernel.process.socket_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_server_crash_mid_call_is_a_typed_error_and_it_restarts(kernel: McpKernel) -> None:
    before = kernel.servers()["notes"]["restarts"]
    kernel.fake.script(call_reply(("notes.crash", {"after": 0.2})), text_reply("It broke."),
                       call_reply(("notes.add", {"a": 1, "b": 2})), text_reply("3"))
    with kernel.client() as c:
        crashed = chunks(kernel.outcome(c, kernel.actor(c, "crasher", {"do": "think", "prompt": "crash"},
                                                        ["notes.*"])))
        kernel.wait_servers(("notes",), restarts=before + 1)
        again = chunks(kernel.outcome(c, kernel.actor(c, "after", {"do": "think", "prompt": "add"}, ["notes.*"])))
    assert crashed[1]["tool_result"]["error"]["type"] == "server_crashed"
    assert again[1]["tool_result"]["text"] == "3"
