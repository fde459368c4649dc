"""How requests end on the wire (docs/protocol.md, "Requests and replies"), read as raw frames.

A streamed reply ends with STREAM|END (or ERROR) even when it carried no chunk, and two
requests that share an id are both served, each reply tagged with that id and its own opcode.
"""
from __future__ import annotations

import json

from agentos.protocol import Op

REPLY, ERROR, STREAM, END = 0x01, 0x03, 0x05, 0x0D


def _json(payload: bytes) -> dict:
    return json.loads(bytes(payload)) if len(payload) else None  # type: ignore[return-value]


def test_duplicate_in_flight_request_ids_are_both_served(kernel, raw) -> None:
    c = raw()
    c.request(Op.RECV, 7, b'{"timeout": 60}')       # stays in flight until mail arrives
    c.request(Op.HELLO, 7)                          # same id, while RECV waits
    hello = c.read_frame()
    assert (hello.opcode, hello.flags, hello.request_id) == (Op.HELLO, REPLY, 7)
    assert _json(hello.payload)["kernel"] == "agentos"
    me = _json(hello.payload)["you"]["uid"]
    c.request(Op.SEND, 8, json.dumps({"to": f"uid:{me}", "body": "x"}).encode())
    frames = {(f.opcode, f.request_id): f for f in (c.read_frame(), c.read_frame())}
    assert frames.keys() == {(Op.SEND, 8), (Op.RECV, 7)}
    recv = frames[(Op.RECV, 7)]
    assert recv.flags == REPLY and _json(recv.payload)["body"] == "x"
    c.request(Op.NOOP, 7, b"still served")
    assert bytes(c.read_frame().payload) == b"still served"


def test_audit_with_no_record_to_replay_ends_with_end(kernel, raw) -> None:
    c = raw()
    c.request(Op.AUDIT, 1, b'{"limit": 0}')
    frame = c.read_frame()
    assert (frame.opcode, frame.flags, frame.request_id) == (Op.AUDIT, END, 1)
    assert bytes(frame.payload) == b""


def test_audit_streams_records_then_end(kernel, raw) -> None:
    c = raw()
    for rid in (1, 2):
        c.request(Op.HELLO, rid)
        assert c.read_frame().flags == REPLY
    c.request(Op.AUDIT, 3, b'{"limit": 2}')
    chunks = [c.read_frame(), c.read_frame()]
    assert [f.flags for f in chunks] == [STREAM, STREAM]
    records = [_json(f.payload) for f in chunks]
    assert [r["op"] for r in records] == ["HELLO", "HELLO"]
    assert set(records[0]) == {"ts", "agent", "name", "uid", "pid", "op", "outcome", "latency_ms"}
    end = c.read_frame()
    assert (end.flags, bytes(end.payload)) == (END, b"")


def test_following_the_logs_of_a_silent_ended_agent_ends_with_end(kernel, raw) -> None:
    with kernel.client() as admin:
        agent = admin.spawn("silent", command=["/bin/true"], sandboxed=False)
        admin.wait(id=agent["id"], timeout=60)
    c = raw()
    c.request(Op.LOGS, 1, json.dumps({"id": agent["id"], "follow": True}).encode())
    frame = c.read_frame()
    assert (frame.opcode, frame.flags, frame.request_id) == (Op.LOGS, END, 1)
    end = _json(frame.payload)
    assert (end["id"], end["size"], end["status"], end["exit_code"]) == (agent["id"], 0, "exited", 0)
