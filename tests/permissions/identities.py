"""Test helpers: kernels with config sections, and clients running as another uid."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentos import Client, SyscallError
from agentos.testing.kernel import KernelProcess

LAUNCHER = Path(__file__).with_name("configured_kernel.py")
NOBODY = 65534


@contextmanager
def configured_kernel(sections: dict[str, Any], *, world_reachable: bool = False) -> Iterator[KernelProcess]:
    """A real kernel subprocess with ``sections``; ``world_reachable`` puts its socket where
    any uid can connect (a 0755 dir, socket mode 0666) so the kernel's own checks decide."""
    root = Path(tempfile.mkdtemp(prefix="agentos-perm-"))
    try:
        if world_reachable:
            root.chmod(0o755)
        config = root / "sections.json"
        config.write_text(json.dumps(sections))
        kernel = KernelProcess(root / "k", command=[sys.executable, str(LAUNCHER), str(config)],
                               args=["--socket-mode", "666"] if world_reachable else [])
        kernel.start()
        try:
            yield kernel
        finally:
            status = kernel.stop()
            log = kernel.log()
        assert status == 0, f"kernel exited with {status}:\n{log}"
        assert "Traceback" not in log, f"kernel logged a traceback:\n{log}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_as(uid: int, socket_path: Path, fn: Callable[[Client], Any]) -> dict[str, Any]:
    """Run ``fn(client)`` in a forked child that dropped to ``uid`` before connecting.

    Returns ``{"ok": result}``, or ``{"error": class name, "code", "message"}`` for a
    SyscallError, so the kernel's SO_PEERCRED check sees a genuinely different uid.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: a client under another uid is made with setuid")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                with Client(socket_path) as client:
                    result: dict[str, Any] = {"ok": fn(client)}
            except SyscallError as exc:
                result = {"error": type(exc).__name__, "code": exc.code.value,
                          "message": exc.message}
            os.write(write_end, json.dumps(result).encode())
        except BaseException:  # noqa: BLE001 - a forked child reports everything, then exits
            os.write(write_end, json.dumps({"crash": traceback.format_exc()}).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks))
    assert "crash" not in result, result["crash"]
    return result
