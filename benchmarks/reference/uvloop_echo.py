"""uvloop reference: an asyncio Protocol answering NOOP frames, the way a careful
asyncio programmer would write it (one buffer per connection, all replies to one
``data_received`` sent with one ``transport.write``).

It parses the header with ``struct`` on its own rather than through agentos'
codec, so it stays a reference for the codec too. Behaviour matches
echo_epoll.c: NOOP is echoed with flags REPLY, other opcodes get a
not_implemented ERROR reply, a bad header closes the connection.

usage: python uvloop_echo.py SOCKET_PATH   (prints "ready"; SIGTERM/SIGINT unlink the socket)
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys

import uvloop

HEADER = struct.Struct("<HBBHHII")
HEADER_SIZE = HEADER.size
MAGIC = 0x4F41
VERSION = 1
OP_NOOP = 0x00
FLAG_REPLY = 0x01
FLAG_ERROR = 0x02
KNOWN_FLAGS = 0x0F
MAX_PAYLOAD = 16 * 1024 * 1024
NOT_IMPLEMENTED = b'{"code":"not_implemented","message":"the echo reference answers NOOP only"}'


class EchoProtocol(asyncio.Protocol):
    """One connection: buffer bytes, answer every whole frame, keep the partial rest."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = len(buf)
        pos = 0
        # A NOOP reply is its request with the REPLY flag set: runs of NOOP frames are
        # copied once and patched, instead of re-encoded frame by frame.
        out = bytearray()
        run_start = 0
        unpack_from = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            magic, version, opcode, flags, reserved, request_id, length = unpack_from(buf, pos)
            if (magic != MAGIC or version != VERSION or flags & ~KNOWN_FLAGS or reserved
                    or length > MAX_PAYLOAD):
                self.transport.close()
                return
            start = pos + HEADER_SIZE
            if end - start < length:
                break
            if opcode == OP_NOOP:
                buf[pos + 4] = FLAG_REPLY
            else:
                out += buf[run_start:pos]
                out += HEADER.pack(MAGIC, VERSION, opcode, FLAG_REPLY | FLAG_ERROR, 0, request_id,
                                   len(NOT_IMPLEMENTED))
                out += NOT_IMPLEMENTED
                run_start = start + length
            pos = start + length
        if pos:
            out += buf[run_start:pos]
            del buf[:pos]
            self.transport.write(out)

async def serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_unix_server(EchoProtocol, path)
    print("ready", flush=True)
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()
        if os.path.exists(path):
            os.unlink(path)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SOCKET_PATH")
    uvloop.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
