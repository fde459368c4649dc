"""A parent agent cannot get its child a bind of what it cannot see by swapping a checked
directory for a symlink between the kernel's check of its child's SPAWN and the bind.

The window is made wide and deterministic: the test stops the kernel's zygote, waits until
the kernel has checked the SPAWN and handed it to the zygote (its request is queued on the
zygote's socket), lets the agent make its swap, and only then lets the zygote go on. The
same swap made right after planning, for every kind of bind, is in
``tests/sandbox/test_bind_race.py``.
"""
from __future__ import annotations

import array
import ctypes
import fcntl
import json
import os
import shutil
import signal
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import HostileKernel, Users

SECRET = "the kernel's secret, outside every view"
#: pidfd_getfd(2), the same number on every architecture.
_NR_PIDFD_GETFD = 438


def _zygote(kernel_pid: int) -> tuple[int, int]:
    """The kernel's zygote (its pid, and the fd number of its socket to the kernel): a child of
    the kernel in the kernel's own pid namespace (agents forked from it are in their own)."""
    kernel_ns = os.readlink(f"/proc/{kernel_pid}/ns/pid")
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != kernel_pid:
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            same_ns = os.readlink(f"/proc/{entry}/ns/pid") == kernel_ns
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        if same_ns and any(b"agentos.sandbox.zygote" in a for a in argv):
            return int(entry), int(argv[argv.index(b"-c") + 2])
    raise AssertionError(f"kernel {kernel_pid} has no zygote")


def _queued(pid: int, fd: int) -> int:
    """Bytes waiting on process ``pid``'s socket ``fd`` (a copy of it, taken with pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        ours = libc.syscall(_NR_PIDFD_GETFD, pidfd, fd, 0)
        if ours < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    finally:
        os.close(pidfd)
    try:
        size = array.array("i", [0])
        fcntl.ioctl(ours, termios.FIONREAD, size, True)
        return size[0]
    finally:
        os.close(ours)


def _until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll for a state (the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


@pytest.fixture
def places(hostile: HostileKernel, users: Users) -> Iterator[dict[str, Path]]:
    """The parent agent's writable dir (with the checked dir and the signals dir in it), and a
    secret dir outside its view that the kernel's uid may read."""
    root = Path(tempfile.mkdtemp(prefix="agentos-sec-race-"))
    try:
        root.chmod(0o755)
        writable, secret = root / "writable", root / "secret"
        for directory in (writable / "checked", writable / "signals", secret):
            directory.mkdir(parents=True)
        (writable / "checked" / "mine.txt").write_text("mine")
        (secret / "secret.txt").write_text(SECRET)
        owner = users.kernel if hostile.mode == "unprivileged" else None
        if owner is not None:
            for path in (writable, writable / "checked", writable / "signals", writable / "checked" / "mine.txt"):
                os.chown(path, owner.uid, owner.gid)
        yield {"writable": writable, "checked": writable / "checked", "signals": writable / "signals",
               "secret": secret}
    finally:
        shutil.rmtree(root)


def test_a_dir_swapped_for_a_symlink_during_its_childs_spawn_is_never_bound(
        hostile: HostileKernel, places: dict[str, Path]) -> None:
    checked, signals = places["checked"], places["signals"]
    agent = hostile.spawn("bind_race", {"checked": str(checked), "secret": str(places["secret"]),
                                        "signals": str(signals)},
                          capabilities=["spawn"], writable_paths=[str(places["writable"])])
    hostile.wait_output(agent, 1)
    zygote, socket_fd = _zygote(hostile.pid)
    os.kill(zygote, signal.SIGSTOP)
    try:
        (signals / "zygote-stopped").touch()
        # Queued on the stopped zygote's socket: checked by the kernel, not yet forked.
        _until(lambda: _queued(zygote, socket_fd) > 0, "the SPAWN reached the zygote")
        (signals / "go").touch()
        _until((signals / "swapped").exists, "the agent swapped the checked dir")
    finally:
        os.kill(zygote, signal.SIGCONT)
    verdict = hostile.verdict(agent)
    assert checked.is_symlink()  # the swap happened, after the check (which refuses a symlink to there)
    assert verdict["spawn"] == "unavailable", verdict
    assert str(checked) in verdict["message"] and "symlink" in verdict["message"], verdict
    assert SECRET not in json.dumps(verdict)
    assert hostile.attack("bind_race", "child", "/")["child_saw"]  # the zygote carries on
