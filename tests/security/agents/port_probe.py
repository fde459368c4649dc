"""An HTTP server on this agent's own 127.0.0.1:8000 whose one page tries to get out.

GET / answers "served"; GET /probe/<JSON {"tcp": host port, "path": host path}> answers {"outcomes": {attempt: "ok" |
errno name}, "interfaces": [...]}: the exposure's own TCP port and Unix socket seen from inside,
and the outside world. Through the exposure, every attempt must still fail. READY once listening.
"""
import errno
import http.server
import json
import socket
import urllib.parse

import agentos


def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))


def tcp(host, port):
    with socket.create_connection((host, port), timeout=5):
        pass


def unix(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/probe/"):
            self.answer(b"served")
            return
        host = json.loads(urllib.parse.unquote(self.path.removeprefix("/probe/")))
        self.answer(json.dumps({"outcomes": {
            "exposure tcp": outcome(lambda: tcp("127.0.0.1", host["tcp"])),
            "exposure path": outcome(lambda: unix(host["path"])),
            "outside": outcome(lambda: tcp("192.0.2.1", 80)),
        }, "interfaces": sorted(name for _, name in socket.if_nameindex())}).encode())

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.HTTPServer(("127.0.0.1", 8000), Handler)
agentos.Client().ready()
server.serve_forever()
