"""Run a real kernel in a subprocess for tests: ``with KernelProcess(tmpdir) as k: k.client()``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..client import Client
from ..protocol import HEADER_SIZE, encode_frame
from ..protocol.requests import FD_ENV
from ._server import FakeServer


class KernelProcess:
    """A kernel on a private socket and state dir, stopped (and checked) on exit."""

    def __init__(self, root: str | os.PathLike[str], *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, start_timeout: float = 60.0,
                 command: list[str] | None = None) -> None:
        self.root = Path(root)
        self.socket_path = self.root / "kernel.sock"
        self.state_dir = self.root / "state"
        self.log_path = self.root / "kernel.log"
        self.env = {**os.environ, **(env or {})}
        self.env.pop(FD_ENV, None)
        self.env["AGENTOS_SOCKET"] = str(self.socket_path)
        self.args = list(args or [])
        #: What runs the kernel: ``agentos kernel`` unless a test wraps it.
        self.command = command or [sys.executable, "-m", "agentos", "kernel"]
        self.start_timeout = start_timeout
        #: What the command started: ``agentos kernel`` is the kernel's guardian (kernel/guardian.py).
        self.proc: subprocess.Popen[bytes] | None = None
        #: The kernel's own pid (HELLO's), once started: not ``proc.pid`` under a guardian.
        self.pid = 0
        self._clients: list[Client] = []

    def start(self) -> KernelProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [*self.command, "--socket", str(self.socket_path),
                 "--state-dir", str(self.state_dir), "--log-level", "DEBUG", *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while not self._connectable():
            if self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited with {self.proc.returncode} at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"kernel did not listen within {self.start_timeout}s:\n{self.log()}")
            time.sleep(0.02)
        with Client(self.socket_path, timeout=self.start_timeout) as hello:
            self.pid = int(hello.hello()["pid"])
        return self

    def _connectable(self) -> bool:
        # A NOOP round trip, not just connect(): the socket is bound (and connectable) before the
        # services start, and tests that snapshot the kernel (fds, memory) need them started.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(self.start_timeout)
            probe.connect(str(self.socket_path))
            probe.sendall(encode_frame(0, 1))
            return len(probe.recv(HEADER_SIZE)) > 0
        except OSError:
            return False
        finally:
            probe.close()

    def client(self, **kwargs: Any) -> Client:
        """A connected Client, closed when the kernel stops."""
        c = Client(self.socket_path, **kwargs)
        self._clients.append(c)
        return c

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"kernel ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        return self.proc.returncode

    def stop_checked(self, allow_tracebacks: bool = False) -> None:
        """Stop, then assert a clean end: exit 0, socket removed, no traceback logged."""
        status = self.stop()
        log = self.log()
        assert status == 0, f"kernel exited with {status}:\n{log}"
        assert not self.socket_path.exists(), "kernel left its socket file behind"
        assert allow_tracebacks or "Traceback" not in log, f"kernel logged a traceback:\n{log}"

    def kill(self) -> None:
        """SIGKILL the kernel (a crash); returns once its guardian has killed what it left and exited."""
        if self.proc is not None and self.proc.poll() is None:
            if self.pid and self.pid != self.proc.pid:
                os.kill(self.pid, signal.SIGKILL)
            else:
                self.proc.kill()  # not started yet, or no guardian
            self.proc.wait()

    def kill_with_guardian(self) -> None:
        """SIGKILL the kernel and its guardian at once (its process group): nothing cleans up
        after them, so what the kernel's agents left stays for the next kernel, ``down`` or
        ``doctor --fix``."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            # Orphaned by its guardian, the kernel is pid 1's to reap; until then it is not dead
            # to the next kernel (its instance's start time still reads the same).
            deadline = time.monotonic() + self.start_timeout
            while os.path.exists(f"/proc/{self.pid}"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the killed kernel (pid {self.pid}) was not reaped within "
                                       f"{self.start_timeout}s")
                time.sleep(0.02)

    def restart(self) -> KernelProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> KernelProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_against(process: KernelProcess, fake: FakeServer,
                  start: Callable[[], object] | None = None) -> dict[str, Any]:
    """``start()`` (``process.start`` by default) a kernel whose LLM endpoint is ``fake`` and wait
    for its start-up endpoint check, whose requests are then dropped from ``fake.requests``: they
    are the kernel's own, not the test's. Returns the check (``endpoint_check``)."""
    before = len(fake.requests)
    (start or process.start)()
    with process.client() as client:
        status = endpoint_check(client)
    del fake.requests[before:]
    return status


def endpoint_check(client: Client, timeout: float = 60.0) -> dict[str, Any]:
    """HELLO's ``capabilities.llm.endpoint`` once the kernel's start-up check has ended."""
    give_up = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.hello()["capabilities"]["llm"]["endpoint"]
        if status["checked_at"] is not None or status["error"] is not None:
            return status
        if time.monotonic() > give_up:
            raise RuntimeError(f"the kernel did not finish checking its LLM endpoint in {timeout}s")
        time.sleep(0.02)
