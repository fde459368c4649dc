"""Which kernel a command talks to, and starting one in the background for ``agentos up``."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..client import AsyncClient, Client
from ..errors import AgentOSError, KernelNotRunning
from ..kernel.config import default_socket_path, default_state_dir
from ..manifest import Manifest
from ..units import parse_duration

#: How long a kernel we started may take to listen.
START_TIMEOUT = 30.0


def add_socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, help="the kernel's socket (default: $AGENTOS_SOCKET, else "
                        "/run/agentos/kernel.sock for root, else the user runtime dir)")


def duration_option(text: str) -> float:
    """An argparse ``type`` for durations (``10s``, ``500ms``); a bad one is argparse's usage error."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("duration: ")) from None


def env_option(text: str) -> tuple[str, str]:
    """An argparse ``type`` for ``--env NAME=VALUE``; without ``=`` it is argparse's usage error."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def socket_path(explicit: Path | None, manifest: Manifest | None = None) -> Path:
    """``--socket``, else the manifest's ``kernel.socket``, else the environment's default."""
    if explicit is not None:
        return explicit
    if manifest is not None and manifest.kernel.socket is not None:
        return manifest.kernel.socket
    return default_socket_path()


class UnsafeRuntimeDir(AgentOSError):
    """The per-user directory under /tmp exists but is not private to this user."""


def private_runtime_dir(directory: Path | None = None) -> Path:
    """``/tmp/agentos-UID``, made mode 0700 if missing, checked before a kernel starts: the socket's
    home when ``XDG_RUNTIME_DIR`` is unset (su, sudo -u, cron, containers), and where every kernel's
    sandboxes mount their root. The kernel refuses a shared one (another user could swap what is in
    it) with an error its client never sees; this says what to do instead."""
    uid = os.geteuid()
    if directory is None:
        directory = Path(os.path.realpath(tempfile.gettempdir())) / f"agentos-{uid}"
    try:
        os.mkdir(directory, 0o700)  # the umask can only take bits away
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRuntimeDir(f"{directory} is not a directory: remove it (`rm {directory}`), or set "
                               "XDG_RUNTIME_DIR or AGENTOS_SOCKET to a directory of your own")
    if info.st_uid != uid:
        raise UnsafeRuntimeDir(f"{directory} belongs to uid {info.st_uid}, not to you (uid {uid}): someone "
                               "may be waiting for your agents there. Have root remove it "
                               f"(`sudo rm -rf {directory}`), or set XDG_RUNTIME_DIR or AGENTOS_SOCKET "
                               "to a directory of your own")
    if info.st_mode & 0o077:
        raise UnsafeRuntimeDir(f"{directory} is mode {stat.S_IMODE(info.st_mode):04o}; it must be private "
                               f"to you: `chmod 700 {directory}`")
    return directory


def marker_path(socket: Path) -> Path:
    """Beside the socket: the pid of a kernel ``agentos up -d`` left running, for ``agentos down``."""
    return socket.with_name(socket.name + ".up")


class StartedKernel:
    """A kernel this command started: ``agentos kernel --manifest FILE`` in its own session."""

    def __init__(self, manifest: Manifest, socket: Path) -> None:
        private_runtime_dir()
        state_dir = manifest.kernel.state_dir or default_state_dir()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket = socket
        self.log_path = state_dir / "kernel.log"
        with open(self.log_path, "ab") as log:
            # Its own session: Ctrl-C in this terminal is ours to handle, and -d leaves it running.
            # ``proc`` is the kernel's guardian (kernel/guardian.py); the kernel is its child.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentos", "kernel", "--manifest", str(manifest.path),
                 "--socket", str(socket)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        #: The kernel's own pid, from its HELLO once it serves.
        self.kernel_pid: int | None = None

    @property
    def pid(self) -> int:
        """The kernel's pid once it serves (what ``down`` and ``ps`` show), its guardian's before."""
        return self.kernel_pid or self.proc.pid

    async def connect(self) -> AsyncClient:
        """Wait until the kernel serves; a kernel that dies or stays silent is an error with its log."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            client = None
            try:
                client = await AsyncClient.connect(self.socket)
                # Its socket listens before its services have started (and before SIGTERM is handled
                # gracefully): only an answer says it serves.
                self.kernel_pid = int((await client.hello())["pid"])
                return client
            except (AgentOSError, OSError):
                if client is not None:
                    await client.close()
            if self.proc.poll() is not None:
                raise self.failure("while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise KernelNotRunning(f"the kernel did not listen on {self.socket} within {START_TIMEOUT:g}s:\n"
                                       f"{self.log_tail()}")
            await asyncio.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    if self.kernel_pid is not None:
                        os.kill(self.kernel_pid, signal.SIGKILL)  # its guardian then kills what it left
                    else:
                        # Both: the guardian's death would only ask the kernel to stop once more.
                        os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self.proc.wait()

    def exited(self, grace: float = 0.0) -> bool:
        """Whether it has exited, given ``grace`` to finish dying (a dropped connection comes first)."""
        if not grace:
            return self.proc.poll() is not None
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return False
        return True

    def failure(self, when: str) -> KernelNotRunning:
        """The kernel's own last words, for a kernel that exited ``when``."""
        return KernelNotRunning(f"the kernel (pid {self.pid}) exited with status {self.proc.returncode} {when}; "
                                f"the end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_kernel_pid(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the kernel ``pid`` (not our child) and wait for it to exit; False if it was already gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # its guardian then kills what it left
    return True


def connect(args: argparse.Namespace) -> Client:
    """A blocking client for a command's ``--socket`` (or the default kernel)."""
    return Client(socket_path(args.socket))
