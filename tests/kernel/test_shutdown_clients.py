"""While the kernel shuts down, a client's connection stays open until the kernel has stopped:
its NOOPs are answered, and every other syscall (one in flight too) fails with ``unavailable``
saying why, instead of the connection dropping while its agents are still being stopped. The
client's connection closes when the kernel exits."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agentos import AsyncClient, ConnectionClosed
from agentos.errors import Unavailable
from agentos.testing.kernel import KernelProcess

MANIFEST = """
kernel:
  processes:
    stop_grace: 1h
agents:
  unused: {command: [sh, -c, 'true']}
"""


def test_a_client_is_answered_while_the_kernel_stops_its_agents(tmp_path: Path) -> None:
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text(MANIFEST)
    release = tmp_path / "release"
    # Ignores SIGTERM, and (with a grace of an hour) holds the shutdown until the test lets it end.
    script = f"trap '' TERM; echo up; while [ ! -e {release} ]; do sleep 0.02; done"
    kernel = KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]).start()
    proc = kernel.proc
    assert proc is not None

    async def main() -> None:
        client = await AsyncClient.connect(kernel.socket_path, timeout=60)
        agent = await client.spawn("holdout", command=["sh", "-c", script], sandboxed=False)
        while "up" not in await client.logs(id=agent["id"]):
            await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(client.wait(id=agent["id"]))
        # Frames are read in order: once this NOOP is answered, the WAIT is in flight.
        assert await client.noop(b"behind the wait") == b"behind the wait"
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(Unavailable, match="shutting down"):
            await waiting
        with pytest.raises(Unavailable, match="shutting down"):
            await client.list_agents()
        assert await client.noop(b"still here") == b"still here"
        assert proc.poll() is None, "the kernel waits for its agent"
        release.touch()
        assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 60) == 0
        with pytest.raises((ConnectionClosed, OSError)):
            await client.noop(b"gone")

    try:
        asyncio.run(main())
    finally:
        release.touch()
        kernel.stop()
    assert "agent holdout" in kernel.log() and "killed: exit code 0" in kernel.log()
