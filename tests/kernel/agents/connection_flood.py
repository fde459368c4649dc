"""An agent that connects to the kernel's socket by path until refused, then prints what it got.

argv: the socket path. Prints one JSON line: ``{"served": N, "then": <refusal payload>,
"inherited": <whether its inherited connection still answers>}``.
"""
import json
import os
import socket
import sys
from typing import Any

from agentos.protocol import FrameDecoder, encode_frame


def noop(sock: socket.socket) -> Any:
    """The kernel's answer to a NOOP: its reply, or the refusal it sent before reading."""
    try:
        sock.sendall(encode_frame(0, 1, b"ping"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # Refused already; the refusal is still there to read.
    decoder = FrameDecoder()
    frames: list = []
    while not frames:
        data = sock.recv(65536)
        if not data:
            sys.exit("the kernel closed a connection without a frame")
        frames = decoder.feed(data)
    return frames[0]


inherited = socket.socket(fileno=int(os.environ["AGENTOS_FD"]))
inherited.settimeout(60)
noop(inherited)  # Answered once the kernel has adopted it: the count starts from there.
held: list[socket.socket] = []
while len(held) < 1000:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(sys.argv[1])
    frame = noop(sock)
    if frame.flags != 0x01:
        refusal = json.loads(bytes(frame.payload))
        break
    held.append(sock)
else:
    refusal = None
print(json.dumps({"served": len(held), "then": refusal, "inherited": noop(inherited).flags == 0x01}))
