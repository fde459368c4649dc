"""Send hand-made request frames on this agent's own kernel connection; report every reply.

argv[1]: JSON list of [opcode, payload text] (the text is sent as UTF-8 with surrogates
passed through, so a lone surrogate can be sent as JSON text). Each request gets
``wait`` seconds (argv[2]) for its final frame. Prints {"replies": [{"flags", "code" |
"payload"} or "no reply"]}.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

from agentos.protocol import FrameDecoder, encode_frame

requests = json.loads(sys.argv[1])
wait = float(sys.argv[2])
conn = socket.socket(fileno=int(os.environ["AGENTOS_FD"]))
decoder = FrameDecoder()
replies = []
for rid, (opcode, text) in enumerate(requests, start=1):
    conn.sendall(encode_frame(opcode, rid, text.encode("utf-8", "surrogatepass")))
    deadline = time.monotonic() + wait
    reply: str | dict[str, object] = "no reply"
    while reply == "no reply" and time.monotonic() < deadline:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.recv(65536)
        except TimeoutError:
            break
        if not data:
            reply = "connection closed"
            break
        for frame in decoder.feed(data):
            if frame.request_id != rid or frame.flags & 0x04 and not frame.flags & 0x08:
                continue
            payload = bytes(frame.payload)
            body = json.loads(payload) if payload else {}
            reply = {"flags": frame.flags, "code": body.get("code") if frame.flags & 0x02 else None,
                     "message": body.get("message") if frame.flags & 0x02 else None}
    replies.append(reply)
emit(agent="raw_requests", replies=replies)
