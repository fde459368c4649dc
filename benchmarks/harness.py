"""Build the C references and run the servers the NOOP benchmarks compare.

Shared by benchmarks/conftest.py and tests/test_bench_refs.py (which loads this
file by path, so it imports nothing from the benchmarks folder).
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
SRC_DIR = Path(__file__).resolve().parent.parent / "src"
#: Python children run with this interpreter's flags (-S, -X ...), so they import the same agentos.
PYTHON = [sys.executable, *subprocess._args_from_interpreter_flags()]  # type: ignore[attr-defined]
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class References:
    """Paths of the compiled C reference programs."""

    echo_server: Path
    load_client: Path


def build_references(out_dir: Path) -> References:
    """Compile echo_epoll.c and load_client.c with the system C compiler (``$CC``, else cc)."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler: {cc!r} is not on PATH (set CC)")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in ("echo_epoll", "load_client"):
        binary = out_dir / name
        cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(REFERENCE_DIR / f"{name}.c")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        built[name] = binary
    return References(built["echo_epoll"], built["load_client"])


def ensure_agentos_importable() -> None:
    """Make a source checkout that was not pip-installed importable here and in children."""
    if importlib.util.find_spec("agentos") is None:
        sys.path.insert(0, str(SRC_DIR))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR),
                                                                 os.environ.get("PYTHONPATH")]))


def _die_with_parent() -> None:
    """Runs in a child before exec: it gets SIGTERM if the benchmark process dies
    (a crash skips fixture teardown, and servers must not outlive the session).
    The benchmark process runs no threads, so a ``preexec_fn`` is safe here."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """A server subprocess on a Unix socket in its own temp dir.

    ``stop()`` sends SIGTERM, reaps the process and removes the dir; it raises if
    the server had to be killed or left its socket behind, so leaks show up.
    """

    def __init__(self, name: str, argv: list[str], workdir: Path, socket_path: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.socket_path = socket_path
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=workdir,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509
        try:
            self._wait_ready()
        except BaseException:
            self.stop(check=False)
            raise
        self.pid = self._serving_pid()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"listening:\n{self.log()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket_path))
                    return
                except (FileNotFoundError, ConnectionRefusedError):
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not listen on {self.socket_path} within "
                           f"{_STARTUP_TIMEOUT:.0f}s:\n{self.log()}")

    def cpu_ns(self) -> int:
        """CPU time the server has used so far, all threads, in ns (from schedstat)."""
        return process_cpu_ns(self.pid)

    def _serving_pid(self) -> int:
        """The serving process: ``agentos kernel`` is the kernel's guardian, the kernel its child."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            return int(entry)
                except OSError:
                    continue
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self, check: bool = True) -> None:
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"did not exit within {_STOP_TIMEOUT:.0f}s of SIGTERM")
        elif self.proc.returncode != 0:
            problems.append(f"had exited with {self.proc.returncode}")
        if self.socket_path.exists():
            problems.append(f"left its socket {self.socket_path}")
        log = self.log()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if problems and check:
            raise RuntimeError(f"{self.name} {' and '.join(problems)}:\n{log}")


def process_cpu_ns(pid: int) -> int:
    """CPU time process ``pid`` has used so far, all threads, in ns (from schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just exited
    return total


@dataclass
class Goals:
    """Figures measured against their goals, printed at the end of the session."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, measured: str, goal: str, met: bool, detail: str = "") -> None:
        self.rows.append({"name": name, "measured": measured, "goal": goal, "met": met,
                          "detail": detail})

    def render(self) -> list[str]:
        width = max(len(row["name"]) for row in self.rows)
        return [f"{row['name']:<{width}}  {row['measured']:>18}  goal {row['goal']:<10} "
                f"{'met' if row['met'] else 'NOT MET':<7}  {row['detail']}" for row in self.rows]


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bwrap_argv(command: list[str], *, seccomp_fd: int, readonly: Sequence[str] = (),
               env: dict[str, str] | None = None) -> list[str]:
    """bubblewrap with the launcher's default view, namespaces and seccomp filter (no Landlock,
    no cgroup): the reference a sandboxed start is compared with."""
    from agentos.sandbox.mounts import default_system_ops  # lazy: tests load this file by path

    argv = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "agent", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--clearenv"]
    for op in default_system_ops():
        if op.kind == "symlink":
            argv += ["--symlink", str(op.source), op.dest]
        else:
            argv += ["--ro-bind", str(op.source), op.dest]
    for path in readonly:
        argv += ["--ro-bind", path, path]
    for key, value in (env or {}).items():
        argv += ["--setenv", key, value]
    return [*argv, "--seccomp", str(seccomp_fd), "--", *command]


def _workdir(name: str) -> Path:
    # Short, so the socket path stays under the 108-byte sun_path limit.
    return Path(tempfile.mkdtemp(prefix=f"agentos-bench-{name}-"))


def start_c_echo(refs: References) -> Server:
    workdir = _workdir("c")
    sock = workdir / "echo.sock"
    return Server("c_epoll", [str(refs.echo_server), str(sock)], workdir, sock)


def start_uvloop_echo() -> Server:
    workdir = _workdir("uvloop")
    sock = workdir / "echo.sock"
    return Server("uvloop", [*PYTHON, str(REFERENCE_DIR / "uvloop_echo.py"), str(sock)],
                  workdir, sock)


def start_kernel() -> Server:
    workdir = _workdir("kernel")
    sock = workdir / "kernel.sock"
    argv = [*PYTHON, "-m", "agentos.cli.main", "kernel", "--socket", str(sock),
            "--state-dir", str(workdir / "state")]
    return Server("kernel", argv, workdir, sock)


def run_load_client(refs: References, socket_path: Path, *, mode: str = "sequential",
                    payload: int = 0, batch: int = 10000, procs: int = 1, duration: float = 1.0,
                    warmup: float = 0.2, requests: int | None = None,
                    verify: bool = False) -> dict[str, Any]:
    """Run the C load client once and return its JSON result."""
    argv = [str(refs.load_client), "--socket", str(socket_path), "--mode", mode,
            "--payload", str(payload), "--batch", str(batch), "--procs", str(procs),
            "--duration", str(duration), "--warmup", str(warmup)]
    if requests is not None:
        argv += ["--requests", str(requests)]
    if verify:
        argv.append("--verify")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=duration + warmup + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"load_client failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


class SdkWorkers:
    """``count`` sdk_worker.py processes, each with its own ``agentos.Client`` connection."""

    def __init__(self, socket_path: Path, count: int) -> None:
        script = str(Path(__file__).resolve().parent / "sdk_worker.py")
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                self.procs.append(subprocess.Popen(
                    [*PYTHON, script, str(socket_path)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True, bufsize=1,
                    preexec_fn=_die_with_parent))  # noqa: PLW1509
            self._expect("ready")
        except BaseException:
            self.close()
            raise

    def _expect(self, word: str) -> None:
        for proc in self.procs:
            # Other lines are not ours: an editable install logs its rebuild to stdout on import.
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.strip() == word:
                    break
            else:
                raise RuntimeError(f"sdk worker {proc.pid} exited with {proc.wait()} "
                                   f"before saying {word!r}")

    def run(self, requests_each: int, payload: int) -> None:
        """Every worker makes ``requests_each`` NOOP calls at once; returns when all are done."""
        for proc in self.procs:
            proc.stdin.write(f"{requests_each} {payload}\n")  # type: ignore[union-attr]
        self._expect("done")

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def load_server(refs: References, server: Server, **options: Any) -> dict[str, Any]:
    """``run_load_client`` against ``server``, adding the server's CPU time per frame.

    CPU per frame is robust to other load on the machine, which makes frames/s noisy.
    """
    before = server.cpu_ns()
    result = run_load_client(refs, server.socket_path, **options)
    frames = result["frames"] + result["warmup_frames"]
    result["server_cpu_ns_per_frame"] = (server.cpu_ns() - before) / frames
    return result
