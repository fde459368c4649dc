"""The memory of closed connections goes back to the system: after a burst of clients
connects, is served and hangs up, the kernel's resident memory falls back near where it was
(kernel/heap.py). Without the trim, glibc keeps the pages their buffers touched: 20,000
connections closed left the kernel at 162 MB against a 43 MB baseline (docs/endurance.md)."""
from __future__ import annotations

import socket
import time
from pathlib import Path

from agentos.protocol import HEADER_SIZE, Op
from agentos.protocol.codec import encode_frame
from agentos.testing.kernel import KernelProcess

#: Connections in the burst: their buffers add tens of MB, well above the kernel's own noise.
CLIENTS = 3000
#: Bounds a broken run only: the trim follows the burst by about a second.
DEADLINE = 60.0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _served_burst(path: Path, count: int) -> list[socket.socket]:
    """``count`` connections, each answered one NOOP (so the kernel filled both its buffers)."""
    clients = []
    noop = encode_frame(Op.NOOP, 1)
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        s.sendall(noop)
        clients.append(s)
    for s in clients:
        assert len(s.recv(HEADER_SIZE, socket.MSG_WAITALL)) == HEADER_SIZE
    return clients


def test_memory_of_a_closed_burst_of_connections_is_returned(tmp_path: Path) -> None:
    from agentos._fast import reactor  # noqa: F401 - this test is about the compiled one
    # A heap glibc never shrinks by itself, as a busy kernel's is: there, what was allocated
    # after the buffers pins the heap's top, and glibc only ever gives back the top.
    # The compiled reactor in both CI modes: its buffers are what malloc holds (the Python
    # twin's live in Python's own allocator, which keeps them, docs/endurance.md).
    kernel = KernelProcess(tmp_path / "k", env={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1073741824",
                                                "AGENTOS_NO_EXTENSIONS": "0"}).start()
    try:
        for s in _served_burst(kernel.socket_path, 200):  # the kernel's own first-use growth
            s.close()
        time.sleep(2)
        baseline = _rss_kib(kernel.pid)
        clients = _served_burst(kernel.socket_path, CLIENTS)
        held = _rss_kib(kernel.pid)
        added = held - baseline
        assert added > 2 * 1024, f"the burst added only {added} KiB: nothing to measure"
        for s in clients:
            s.close()
        deadline = time.monotonic() + DEADLINE
        while (after := _rss_kib(kernel.pid)) - baseline > added * 0.25 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert after - baseline <= added * 0.25, (
            f"baseline {baseline} KiB, {held} KiB with {CLIENTS} clients, still {after} KiB after they closed")
    finally:
        kernel.stop_checked()
