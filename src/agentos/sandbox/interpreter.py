"""The code interpreter inside a sandbox: a long-lived Python whose namespace outlives cells.

``Sandbox.run_code`` starts it by EXEC (so it is confined as the agent is) with this file as
its script, and speaks frames over the exec's stdin and stdout: a 4-byte big-endian length,
then a msgpack map. In: ``{n, code, stdin, max_output}``, one cell. Out, for cell ``n``:
``{t: "out", n, s: "stdout" | "stderr", d: bytes}`` as the cell writes, ``{t: "display", n,
data: {mime: text | bytes}}`` for ``display()`` and open matplotlib figures, and last ``{t:
"done", n, result, error, dropped}``: ``result`` the last expression's MIME bundle (as
Jupyter's ``execute_result``), ``error`` ``{name, value, traceback, frames}``.

The protocol keeps private duplicates of fds 0 and 1. The cell's own fd 0 is its ``stdin``
(else /dev/null) and fds 1 and 2 are pipes drained by a thread each, so what subprocesses
and C code write is captured as well as ``print``. A cell's output beyond ``max_output``
bytes per stream is counted, not sent (the client enforces the same bound: a cell can reach
the protocol fd too). SIGINT interrupts a running cell (``KeyboardInterrupt``) and is
ignored between cells. This file imports only the standard library and msgspec.

The kernel runs it warm (``processes/exec.py``): the EXEC of this file by the kernel's own Python
is forked by the zygote that forked the sandbox, confined by the same steps as any exec, and
runs it in place. So the first cell finds that zygote's modules already imported: a template's
``preload`` (numpy, pandas...) and the default zygote's (agentos, asyncio, json...).
"""
from __future__ import annotations

import ast
import builtins
import io
import linecache
import os
import select
import signal
import struct
import sys
import threading
import traceback
from typing import Any, cast

import msgspec

HEADER = struct.Struct(">I")
#: IPython's display protocol: the ``_repr_*_`` methods and their MIME types.
REPRS = (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
         ("image/svg+xml", "_repr_svg_"), ("image/png", "_repr_png_"),
         ("image/jpeg", "_repr_jpeg_"), ("text/latex", "_repr_latex_"),
         ("application/json", "_repr_json_"))
_F_SETPIPE_SZ = 1031


class Channel:
    """The frames out, from the main thread and both capture threads; one cell's accounting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.encoder = msgspec.msgpack.Encoder()
        self.cell: int | None = None
        self.max_output = 0
        self.sent = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}

    def begin(self, cell: int, max_output: int) -> None:
        self.cell, self.max_output = cell, max_output
        self.sent = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}

    def send(self, message: dict[str, Any]) -> None:
        try:
            body = self.encoder.encode(message)
        except (TypeError, ValueError, OverflowError) as exc:
            # A _repr_json_ that msgpack cannot carry: say so rather than lose the cell.
            body = self.encoder.encode({**message, "result": None, "data": None,
                                        "error": _error(exc, None)})
        frame = memoryview(HEADER.pack(len(body)) + body)
        with self.lock:
            while frame:
                frame = frame[os.write(self.fd, frame):]

    def output(self, stream: str, data: bytes) -> None:
        room = max(self.max_output - self.sent[stream], 0)
        kept = data[:room]
        self.sent[stream] += len(kept)
        self.dropped[stream] += len(data) - len(kept)
        if kept:
            self.send({"t": "out", "n": self.cell, "s": stream, "d": kept})


class Capture:
    """One of fds 1 and 2, redirected to a pipe whose reader turns writes into frames."""

    def __init__(self, fd: int, stream: str, channel: Channel) -> None:
        read, write = os.pipe()
        try:
            import fcntl
            fcntl.fcntl(write, _F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups for a flood
        except OSError:
            pass
        os.dup2(write, fd)
        os.close(write)
        os.set_blocking(read, False)
        self.read, self.stream, self.channel = read, stream, channel
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name=f"capture-{stream}", daemon=True).start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.read, select.POLLIN)
        while True:
            poller.poll()
            self.drain()

    def drain(self) -> None:
        """Send what the pipe holds now: at a cell's end, everything it wrote is sent first."""
        with self.lock:
            while True:
                try:
                    data = os.read(self.read, 1 << 20)
                except BlockingIOError:
                    return
                self.channel.output(self.stream, data)


class Interpreter:
    def __init__(self, proto_in: int, channel: Channel) -> None:
        self.proto_in = proto_in
        self.channel = channel
        self.pid = os.getpid()
        self.running = False
        self.captures = [Capture(1, "stdout", channel), Capture(2, "stderr", channel)]
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                                          "display": self.display}
        # Each child a cell forks (os.fork, multiprocessing) leads a process group of its own,
        # which takes whatever it forks in turn; at a cell's end that group is killed when the
        # child has ended (what is left of it are orphans the cell left) or when a fork of the
        # cell was refused at the pids limit (``_end_forks``). Left running, a fork bomb's forks
        # outlive their cell: each one that fails exits, its reaped pid lets another fork, and
        # the chain goes on, taking the sandbox's CPU quota and pids from the next cells (a
        # memory bomb after it reached its OOM kill seconds late, past its timeout). A live
        # child is otherwise left alone: a multiprocessing pool's idle workers, killed, would
        # take its queue's lock with them and hang the pool. Zombies count in the pids limit.
        self.children: set[int] = set()
        self.forked_child = False
        #: A fork of the interpreter's was refused (EAGAIN: the pids limit) since the last cell's end.
        self.refused = False
        self._fork = os.fork
        os.fork = self.fork
        signal.signal(signal.SIGINT, self._interrupt)
        os.register_at_fork(after_in_child=self._forked)

    def _interrupt(self, *_: object) -> None:
        if self.running:
            raise KeyboardInterrupt

    def fork(self) -> int:
        """``os.fork`` as cells (and multiprocessing) call it: the interpreter's child leads a
        process group of its own, set on both sides of the fork, so no kill misses it; a fork's
        own children stay in its group."""
        try:
            pid = self._fork()
        except BlockingIOError:
            self.refused = self.refused or os.getpid() == self.pid
            raise
        if os.getpid() == self.pid:
            self.children.add(pid)
            _lead_group(pid)
        elif pid == 0 and os.getppid() == self.pid:
            _lead_group(0)
        return pid

    def _forked(self) -> None:
        if self.forked_child:
            return  # a grandchild: its parent closed these already
        self.forked_child = True
        # A child forked by a cell must not read the next cell or answer for its parent.
        for fd in (self.proto_in, self.channel.fd):
            os.close(fd)
        self.running = False

    def _end_forks(self) -> None:
        """At a cell's end: kill the group of each fork that has ended (orphans, wherever they
        were reparented), or of every fork if one was refused at the pids limit (they are what
        took the pids: a fork bomb ends with its cell). A fork that has ended is reaped after its
        group's kill, its zombie holding the group's id until then; one still dying is reaped
        at a later cell's end, and one the cell's own ``wait`` reaped is forgotten."""
        refused, self.refused = self.refused, False
        for pid in list(self.children):
            try:
                ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                self.children.discard(pid)
                continue
            if ended or refused:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass  # the group is gone: the fork and all it forked have ended
            if ended:
                self.children.discard(pid)
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass  # a thread of the cell's (a pool's) reaped it meanwhile

    def display(self, *objects: Any) -> None:
        """Send each object's MIME bundle now, as a rich output of the running cell."""
        for obj in objects:
            self.channel.send({"t": "display", "n": self.channel.cell, "data": bundle(obj)})

    def serve(self) -> None:
        decoder = msgspec.msgpack.Decoder()
        while True:
            header = _read_exactly(self.proto_in, HEADER.size)
            if header is None:
                return
            body = _read_exactly(self.proto_in, HEADER.unpack(header)[0])
            if body is None:
                return
            self.run(decoder.decode(body))

    def run(self, cell: dict[str, Any]) -> None:
        number = cell["n"]
        self.channel.begin(number, cell.get("max_output", 1 << 20))
        _set_stdin(cell.get("stdin"))
        result = error = None
        filename = f"<cell {number}>"
        code = cell["code"]
        try:
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
            # compile() rather than ast.parse: a SyntaxError's traceback then has no frame of ours.
            tree = cast(ast.Module, compile(code, filename, "exec", ast.PyCF_ONLY_AST))
            last = tree.body[-1] if tree.body else None
            tail = None
            if isinstance(last, ast.Expr):  # its value is the cell's result, as in a notebook
                tree.body.pop()
                tail = compile(ast.Expression(last.value), filename, "eval")
            body = compile(tree, filename, "exec")
            self.running = True
            try:
                exec(body, self.namespace)
                value = eval(tail, self.namespace) if tail is not None else None
            finally:
                self.running = False
            if value is not None:
                self.namespace["_"] = value
                result = bundle(value)
        except BaseException as exc:  # the cell's own SystemExit and KeyboardInterrupt included
            self.running = False
            error = _error(exc, exc.__traceback__)
        if os.getpid() != self.pid:
            _flush()
            os._exit(0 if error is None else 1)
        self._figures()
        self._end_forks()
        _flush()
        for capture in self.captures:
            capture.drain()
        self.channel.send({"t": "done", "n": number, "result": result, "error": error,
                           "dropped": dict(self.channel.dropped)})

    def _figures(self) -> None:
        """Open matplotlib figures are the cell's images, as in a notebook; then closed."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        try:
            for number in pyplot.get_fignums():
                figure = pyplot.figure(number)
                png = io.BytesIO()
                figure.savefig(png, format="png")
                self.channel.send({"t": "display", "n": self.channel.cell,
                                   "data": {"image/png": png.getvalue(), "text/plain": repr(figure)}})
            pyplot.close("all")
        except Exception as exc:
            print(f"figures: {type(exc).__name__}: {exc}", file=sys.stderr)


def bundle(obj: Any) -> dict[str, Any]:
    """``obj``'s MIME bundle: what its ``_repr_*_`` methods give, and always ``text/plain``."""
    data: dict[str, Any] = {}
    if not isinstance(obj, type):  # a class's _repr_png_ is an unbound function
        mimebundle = getattr(obj, "_repr_mimebundle_", None)
        if callable(mimebundle):
            try:
                given = mimebundle()
                data.update(given[0] if isinstance(given, tuple) else given or {})
            except Exception:
                pass
        for mime, name in REPRS:
            method = getattr(obj, name, None)
            if callable(method) and mime not in data:
                try:
                    value = method()
                except Exception:
                    continue
                if value is not None:
                    data[mime] = value
    try:
        data["text/plain"] = repr(obj)
    except Exception as exc:
        data["text/plain"] = f"<repr failed: {type(exc).__name__}: {exc}>"
    return data


def _error(exc: BaseException, tb: Any) -> dict[str, Any]:
    """The exception as structured data, without this file's frames."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
    frames = [{"filename": f.filename, "lineno": f.lineno, "name": f.name, "line": f.line}
              for f in traceback.extract_tb(tb)]
    return {"name": type(exc).__name__, "value": str(exc), "traceback": lines, "frames": frames}


def _lead_group(pid: int) -> None:
    try:
        os.setpgid(pid, 0)
    except OSError:
        pass  # it has ended already


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        data = os.read(fd, size - len(chunks))
        if not data:
            return None
        chunks += data
    return bytes(chunks)


def _set_stdin(data: bytes | None) -> None:
    """The cell's fd 0 and ``sys.stdin``: ``data`` then end of file, or /dev/null."""
    if data:
        read, write = os.pipe()
        os.dup2(read, 0)
        os.close(read)

        def feed() -> None:
            try:
                os.write(write, data)  # a short write only when the cell stopped reading
            except OSError:
                pass
            finally:
                os.close(write)

        threading.Thread(target=feed, daemon=True).start()
    else:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def main() -> None:
    # A script's own directory leads sys.path; a cell's imports should see the working
    # directory instead, as in an interactive interpreter.
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        sys.path[0] = ""
    # Forked warm, this interpreter's sys.path was made from its zygote's PYTHONPATH: the
    # sandbox's own comes next, as a new interpreter would have it.
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are collected, never shown
    proto_in, proto_out = os.dup(0), os.dup(1)  # not inherited by the cells' subprocesses
    interpreter = Interpreter(proto_in, Channel(proto_out))
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    interpreter.serve()


if __name__ == "__main__":
    main()
