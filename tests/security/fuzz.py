"""Fuzz every opcode with structured junk and check that each request gets exactly one answer.

Each request is a valid frame whose payload is junk shaped like the opcode's fields: wrong
JSON types, NaN and Infinity, huge integers, deep nesting, lone surrogates, CRLF, huge
strings, or bytes that are not JSON at all. Several connections keep a window of requests
in flight each. The report counts replies by opcode and error code, ``internal`` replies,
requests left without a final frame, extra frames, kernel crashes, and the kernel's RSS and
fds before and after.

    python -m tests.security.fuzz --frames 1000000            # its own kernel, as root
    python -m tests.security.fuzz --socket /path/kernel.sock  # a running kernel
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from agentos.protocol import FrameDecoder, Op, encode_frame

ERROR, STREAM, END = 0x02, 0x04, 0x08
#: Opcodes whose valid requests may wait as long as they ask (RECV, WAIT): still pending at the
#: end is not "unanswered" for them; closing the connection cancels them.
BLOCKING = frozenset({Op.RECV.name, Op.WAIT.name})
#: THINK's and COUNT's fields (llm/request.py).
THINK_FIELDS = ("prompt", "messages", "system", "temperature", "top_p", "top_k", "max_output_tokens", "stop",
                "seed", "thinking_budget", "thinking_level", "include_thoughts", "json", "response_schema",
                "images", "functions", "function_mode", "allowed_functions", "function_responses", "context",
                "stream", "model", "safety", "candidates", "timeout", "tools")
#: Each opcode's request fields (docs/*.md), so junk reaches past "unknown field" checks.
FIELDS: dict[Op, tuple[str, ...]] = {
    Op.NOOP: (),
    Op.THINK: THINK_FIELDS,
    Op.HELLO: (),
    Op.CONTEXT: ("op", "id", "system", "messages"),
    Op.USAGE: ("agent",),
    Op.COUNT: THINK_FIELDS,
    Op.EMBED: ("texts", "text", "model", "task_type", "dimensions"),
    Op.MODELS: (),
    Op.SPAWN: ("name", "script", "command", "args", "env", "cwd", "sandboxed", "network", "limits",
               "allow_degraded", "capabilities", "writable_paths", "readonly_paths", "hostname", "egress",
               "timeout", "idle_timeout", "project", "workspace", "volumes", "template", "tools",
               "placement"),
    Op.KILL: ("id", "name", "grace", "wait"),
    Op.PAUSE: ("id", "name"),
    Op.RESUME: ("id", "name"),
    Op.START: ("id", "name"),
    Op.LIST: ("status", "name", "project", "include", "limit", "cursor", "stream"),
    Op.WAIT: ("id", "name", "until", "timeout"),
    Op.LOGS: ("id", "name", "tail", "follow"),
    Op.READY: (),
    Op.EXEC: ("id", "name", "argv", "cmd", "env", "cwd", "stdin", "stdin_base64", "stdin_open", "timeout",
              "background", "pty", "attach", "user", "list"),
    Op.EXEC_INPUT: ("exec", "data", "data_base64", "eof"),
    Op.EXEC_SIGNAL: ("exec", "signal", "group"),
    Op.EXEC_RESIZE: ("exec", "rows", "cols"),
    Op.EXPOSE: ("id", "name", "port", "tcp", "list"),
    Op.UNEXPOSE: ("exposure",),
    Op.PURGE: ("project",),
    Op.SEND: ("to", "body"),
    Op.RECV: ("timeout", "name", "ack", "max_deliveries"),
    Op.BROADCAST: ("body",),
    Op.REGISTER: ("name",),
    Op.ACK: ("ids", "name"),
    Op.DEAD_LETTERS: ("action", "mailbox", "name", "ids", "limit"),
    Op.STORE: ("key", "value", "ttl", "scope", "agent"),
    Op.FETCH: ("key", "scope", "agent"),
    Op.DELETE: ("key", "scope", "agent"),
    Op.KEYS: ("prefix", "limit", "scope", "agent"),
    Op.CAS: ("key", "expected", "value", "ttl", "scope", "agent"),
    Op.GET_PERMS: ("agent", "uid"),
    Op.SET_PERMS: ("capabilities", "agent", "uid"),
    Op.HTTP: ("url", "method", "headers", "body", "timeout"),
    Op.SUBSCRIBE: ("topics",),
    Op.UNSUBSCRIBE: ("subscription",),
    Op.PUBLISH: ("topic", "data"),
    Op.AUDIT: ("agent", "follow", "limit", "since"),
    Op.FILE_READ: ("id", "name", "path", "offset", "length"),
    Op.FILE_WRITE: ("id", "name", "path", "data", "data_base64", "append", "offset", "create", "exclusive",
                    "mode", "more"),
    Op.FILE_LIST: ("id", "name", "path", "depth"),
    Op.FILE_STAT: ("id", "name", "path", "follow"),
    Op.FILE_MKDIR: ("id", "name", "path", "parents", "mode"),
    Op.FILE_REMOVE: ("id", "name", "path", "recursive"),
    Op.FILE_RENAME: ("id", "name", "path", "to", "overwrite"),
    Op.FILE_UPLOAD: ("id", "name", "path", "data_base64", "more"),
    Op.FILE_DOWNLOAD: ("id", "name", "path"),
    Op.FILE_WATCH: ("id", "name", "path", "recursive"),
    Op.FILE_DATA: ("handle", "data", "data_base64", "more"),
    Op.VOLUMES: ("action", "name", "project", "uid"),
    Op.APPROVALS: ("action", "id", "reason"),
}
SUBFIELDS = ("memory", "pids", "cpu", "max_pids", "cpu_quota", "role", "content", "X-Test", "parts", "text",
             "name", "parameters", "response", "category", "threshold", "mime_type", "data", "$ref", "$defs",
             "type", "properties", "items", "anyOf", "group", "strategy", "size")
#: Strings that mean something to some handler; none of them names a harmful program.
WORDS = ("", "a", "worker", "/bin/true", "/nonexistent", "../../etc/passwd", "/etc/shadow", "512Mi", "1.5",
         "-1", "0.5", "exit", "ready", "own", "shared", "global", "admin", "spawn", "state", "http://127.0.0.1:9/",
         "file:///etc/passwd", "agent.*", "kernel.events", "GET", "POST", "a\r\nX-Injected: 1", "\u0000",
         "\u202e", "名前", "x" * 65, "gemini-test", "models/gemini-test", "GEMINI-TEST", " gemini-test",
         "gemini-embedding-001", "harassment", "BLOCK_NONE", "object", "#/$defs/a", "#/", "user", "model")


class Junk:
    """JSON text of wrong types and edge values (text, so NaN and lone surrogates can be written)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def value(self, depth: int = 0) -> str:
        r = self.rng
        kind = r.randrange(16 if depth < 3 else 12)
        if kind == 0:
            return r.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0.0"])
        if kind == 1:
            return r.choice(["0", "-1", "1", str(2**31), str(2**63), str(-2**64), "1" * r.randrange(20, 400)])
        if kind == 2:
            return repr(r.uniform(-1e6, 1e6))
        if kind == 3:
            return r.choice(["true", "false", "null"])
        if kind in (4, 5, 6):
            return json.dumps(r.choice(WORDS))
        if kind == 7:
            return '"' + r.choice(["\\ud800", "\\udfff", "\\udc00x", "a\\ud83d"]) + '"'
        if kind == 8:
            return json.dumps("".join(chr(r.randrange(1, 0x3000)) for _ in range(r.randrange(1, 40))))
        if kind == 9:
            return json.dumps("A" * (70_000 if r.random() < 0.05 else 1000))
        if kind == 10:
            depth_ = 5000 if r.random() < 0.05 else r.randrange(2, 200)
            return "[" * depth_ + "]" * depth_
        if kind == 11:
            return '"' + r.choice(WORDS).replace('"', "") + '\\r\\nInjected: yes"'
        if kind in (12, 13):
            return "[" + ",".join(self.value(depth + 1) for _ in range(r.randrange(4))) + "]"
        return self.obj(SUBFIELDS, depth + 1)

    def obj(self, names: tuple[str, ...], depth: int = 0) -> str:
        r = self.rng
        pool = names or ("x",)
        keys = {r.choice(pool) if r.random() < 0.9 else r.choice(WORDS) for _ in range(r.randrange(5))}
        return "{" + ",".join(f"{json.dumps(k)}:{self.value(depth)}" for k in keys) + "}"

    def payload(self, op: Op) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.75:
            text = self.obj(FIELDS[op])
        elif roll < 0.87:
            text = self.value(1)
        elif roll < 0.95:
            return r.randbytes(r.randrange(64))
        else:
            text = r.choice(["", "{", '{"a":', "{}" * 3, '{"a":1,"a":2}', "\ufeff{}", "{} junk"])
        return text.encode("utf-8", "surrogatepass")


@dataclass
class Report:
    sent: int = 0
    replies: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unanswered: Counter[str] = field(default_factory=Counter)
    blocking_open: Counter[str] = field(default_factory=Counter)
    late: int = 0
    extra_frames: int = 0
    streams_open: int = 0
    disconnects: int = 0
    kernel_crashed: bool = False
    rss_before: int = 0
    rss_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    seconds: float = 0.0
    #: A bystander's NOOP round trips in ms (p50, p99, max): for a second before the fuzz, and during it.
    bystander_idle_ms: dict[str, float] = field(default_factory=dict)
    bystander_ms: dict[str, float] = field(default_factory=dict)

    @property
    def internal(self) -> Counter[str]:
        return Counter({op: codes["internal"] for op, codes in self.replies.items() if codes["internal"]})

    def summary(self) -> dict[str, Any]:
        return {"frames": self.sent, "seconds": round(self.seconds, 1),
                "internal": sum(self.internal.values()), "internal_by_opcode": dict(self.internal),
                "unanswered": sum(self.unanswered.values()), "unanswered_by_opcode": dict(self.unanswered),
                "blocking_open": dict(self.blocking_open), "late_answers": self.late, "extra_frames": self.extra_frames,
                "streams_open": self.streams_open,
                "disconnects": self.disconnects, "kernel_crashed": self.kernel_crashed,
                "rss_before": self.rss_before, "rss_after": self.rss_after,
                "fds_before": self.fds_before, "fds_after": self.fds_after,
                "bystander_noop_ms": {"idle": self.bystander_idle_ms, "fuzzed": self.bystander_ms},
                "replies_by_opcode": {op: dict(codes) for op, codes in sorted(self.replies.items())}}


class _Conn:
    def __init__(self, path: str, limit: int) -> None:
        #: Requests to send before this connection is replaced.
        self.limit = limit
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.decoder = FrameDecoder()
        self.out = bytearray()
        self.next_rid = 1
        #: request id -> (opcode name, time sent)
        self.pending: dict[int, tuple[str, float]] = {}
        self.streaming: set[int] = set()
        self.expired: set[int] = set()
        self.sent = 0


def _awaited(conn: _Conn) -> bool:
    """Whether a request on ``conn`` still owes its final frame (blocking ones excepted)."""
    return any(rid not in conn.streaming and rid not in conn.expired and op not in BLOCKING
               for rid, (op, _) in conn.pending.items())


def _events(conn: _Conn, more: bool, window: int) -> int:
    """Ask for writability only with something to write or room to send more (no busy loop)."""
    in_flight = len(conn.pending) - len(conn.streaming) - len(conn.expired)
    can_send = more and in_flight < window and conn.sent < conn.limit
    return selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out or can_send else 0)


def kernel_usage(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds) of the kernel process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _hello_pid(path: str) -> int:
    from agentos import Client

    with Client(path, timeout=30) as client:
        pid: int = client.hello()["pid"]
        # Wake every service that opens something on first use, so the baseline is settled.
        client.list_agents()
        client.keys()
    return pid


def fuzz(path: str, frames: int, *, connections: int = 8, window: int = 64, seed: int = 0,
         reply_timeout: float = 10.0, recycle_every: int = 20_000) -> Report:
    """Send ``frames`` junk requests to the kernel at ``path``; see the module doc for the report."""
    rng = random.Random(seed)
    junk = Junk(rng)
    ops = list(Op)
    report = Report()
    pid = _hello_pid(path)
    report.rss_before, report.fds_before = kernel_usage(pid)
    selector = selectors.DefaultSelector()
    conns: list[_Conn] = []

    def open_conn() -> None:
        conn = _Conn(path, recycle_every)
        conns.append(conn)
        selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def close_conn(conn: _Conn) -> None:
        for rid, (op, _) in conn.pending.items():
            if rid not in conn.streaming and rid not in conn.expired:
                (report.blocking_open if op in BLOCKING else report.unanswered)[op] += 1
        report.streams_open += len(conn.streaming)
        selector.unregister(conn.sock)
        conn.sock.close()
        conns.remove(conn)

    def on_frame(conn: _Conn, frame: Any) -> None:
        entry = conn.pending.get(frame.request_id)
        if entry is None:
            report.extra_frames += 1
            return
        op = entry[0]
        if frame.flags & STREAM and not frame.flags & (END | ERROR):
            conn.streaming.add(frame.request_id)
            return
        if frame.request_id in conn.expired:
            report.late += 1
            conn.expired.discard(frame.request_id)
        code = "ok"
        if frame.flags & ERROR:
            try:
                code = json.loads(bytes(frame.payload))["code"]
            except (ValueError, KeyError, TypeError):
                code = "undecodable error"
        report.replies[op][code] += 1
        conn.streaming.discard(frame.request_id)
        del conn.pending[frame.request_id]

    for _ in range(connections):
        open_conn()
    idle = Bystander(path)
    time.sleep(1.0)
    report.bystander_idle_ms = idle.stop()
    bystander = Bystander(path)
    started = time.monotonic()
    while report.sent < frames or any(_awaited(c) for c in conns):
        if report.sent < frames:
            for conn in list(conns):
                if conn.sent >= conn.limit and len(conn.pending) == len(conn.streaming) + len(conn.expired):
                    close_conn(conn)  # also ends its streams, which would otherwise pile up
                    open_conn()
        for key, events in selector.select(timeout=1.0):
            conn = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = conn.sock.recv(1 << 20)
                except BlockingIOError:
                    data = None
                except ConnectionError:
                    data = b""
                if data == b"":
                    report.disconnects += 1
                    close_conn(conn)
                    open_conn()
                    continue
                if data:
                    for frame in conn.decoder.feed(data):
                        on_frame(conn, frame)
            if events & selectors.EVENT_WRITE:
                in_flight = len(conn.pending) - len(conn.streaming) - len(conn.expired)
                while in_flight < window and report.sent < frames and conn.sent < conn.limit:
                    op = rng.choice(ops)
                    rid = conn.next_rid
                    conn.next_rid += 1
                    conn.out += encode_frame(op, rid, junk.payload(op))
                    conn.pending[rid] = (op.name, time.monotonic())
                    conn.sent += 1
                    report.sent += 1
                    in_flight += 1
                if conn.out:
                    try:
                        del conn.out[:conn.sock.send(conn.out)]
                    except BlockingIOError:
                        pass
            if conn in conns:
                selector.modify(conn.sock, _events(conn, report.sent < frames, window), conn)
        now = time.monotonic()
        for conn in conns:
            expired = [rid for rid, (_, at) in conn.pending.items()
                       if rid not in conn.streaming and rid not in conn.expired and now - at > reply_timeout]
            for rid in expired:
                name = conn.pending[rid][0]
                conn.expired.add(rid)
                (report.blocking_open if name in BLOCKING else report.unanswered)[name] += 1
            if expired:
                # Their room in the window is free again: a connection whose window was all
                # blocking requests would otherwise never be asked to write more.
                selector.modify(conn.sock, _events(conn, report.sent < frames, window), conn)
        if not os.path.exists(f"/proc/{pid}"):
            report.kernel_crashed = True
            break
    report.seconds = time.monotonic() - started
    report.bystander_ms = bystander.stop()
    for conn in list(conns):
        close_conn(conn)
    selector.close()
    report.kernel_crashed = report.kernel_crashed or not os.path.exists(f"/proc/{pid}")
    if not report.kernel_crashed:
        report.rss_after, report.fds_after = settled_usage(pid, report.fds_before)
    return report


_BYSTANDER = """
import sys, time
from agentos import Client
with Client(sys.argv[1]) as kernel:
    while True:
        start = time.perf_counter()
        kernel.noop(b"bystander")
        print((time.perf_counter() - start) * 1000, flush=True)
        time.sleep(0.01)
"""


class Bystander:
    """Another client, in a process of its own, timing a NOOP every 10 ms while the fuzz runs:
    what a well-behaved client suffers from a misbehaving one."""

    def __init__(self, path: str) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _BYSTANDER, path], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict[str, float]:
        self._proc.terminate()
        out, _ = self._proc.communicate()
        times = sorted(float(line) for line in out.split())
        if not times:
            return {}
        return {"samples": len(times), "p50": round(times[len(times) // 2], 3),
                "p99": round(times[min(len(times) - 1, len(times) * 99 // 100)], 3),
                "max": round(times[-1], 3)}


def settled_usage(pid: int, fds_before: int, limit: float = 20.0) -> tuple[int, int]:
    """The kernel's (RSS, fds) once it has closed the fuzz connections (the limit bounds a leak)."""
    deadline = time.monotonic() + limit
    rss, fds = kernel_usage(pid)
    while fds > fds_before and time.monotonic() < deadline:
        time.sleep(0.1)
        rss, fds = kernel_usage(pid)
    return rss, fds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--socket", help="fuzz this running kernel instead of starting one")
    parser.add_argument("--reply-timeout", type=float, default=10.0,
                        help="seconds after which a request with no final frame counts as unanswered")
    args = parser.parse_args(argv)
    if args.socket:
        report = fuzz(args.socket, args.frames, connections=args.connections, seed=args.seed,
                      reply_timeout=args.reply_timeout)
    else:
        from agentos.testing.kernel import KernelProcess

        with tempfile.TemporaryDirectory(prefix="agentos-fuzz-") as root:
            # No LLM key: THINK must not reach a real endpoint.
            kernel = KernelProcess(root, env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "", "OPENAI_API_KEY": ""})
            kernel.start()
            try:
                report = fuzz(str(kernel.socket_path), args.frames, connections=args.connections, seed=args.seed,
                              reply_timeout=args.reply_timeout)
            finally:
                status = kernel.stop()
            print(f"kernel exit status {status}; tracebacks logged: {kernel.log().count('Traceback')}",
                  file=sys.stderr)
    print(json.dumps({"seed": args.seed, **report.summary()}, indent=1))
    ok = not (report.kernel_crashed or report.internal or report.unanswered or report.extra_frames)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
