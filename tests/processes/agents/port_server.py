"""A tiny HTTP server on the agent's own 127.0.0.1:8000 (its network is false): what EXPOSE forwards to.

GET /hello answers its hostname, GET /bytes/N sends N bytes, POST /echo sends the body back,
GET /close hangs up without answering, GET /hang never answers. READY once it listens.
"""
import http.server
import socket
import sys
import threading

import agentos

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
_CHUNK = 1 << 16


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, length: int, body: bytes = b"") -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(len(body := f"hello from {socket.gethostname()}".encode()), body)
        elif self.path.startswith("/bytes/"):
            left = int(self.path.rsplit("/", 1)[1])
            self._send(left)
            block = bytes(range(256)) * (_CHUNK // 256)
            while left:
                left -= self.wfile.write(block[:min(left, _CHUNK)])
        elif self.path == "/close":
            self.close_connection = True
        elif self.path == "/hang":
            threading.Event().wait()

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        self._send(left)
        while left:
            data = self.rfile.read(min(left, _CHUNK))
            self.wfile.write(data)
            left -= len(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
agentos.Client().ready()
server.serve_forever()
