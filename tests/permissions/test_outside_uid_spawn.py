"""Another local user admitted with ``spawn`` gets no more through the kernel than it has itself."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from agentos import Client

from .identities import NOBODY, configured_kernel, run_as

SLEEPER = str(Path(__file__).parents[1] / "processes" / "agents" / "sleeper.py")


def _spawn(**payload: Any) -> Any:
    def attempt(client: Client) -> Any:
        info = client._call(0x10, {"script": SLEEPER, **payload})
        client.kill(id=info["id"], grace=0)
        return info["limits"]
    return attempt


def test_a_non_admin_user_cannot_reach_what_it_cannot_read_through_spawn() -> None:
    private = Path(tempfile.mkdtemp(prefix="agentos-private-"))  # 0700, root's
    (private / "secret.py").write_text("print(open('/etc/shadow').read())\n")
    try:
        sections = {"permissions": {"uids": {str(NOBODY): ["spawn", "kill"]}}}
        with configured_kernel(sections, world_reachable=True) as kernel:
            sock = kernel.socket_path
            refused = {
                "sandboxed": run_as(NOBODY, sock, _spawn(sandboxed=False)),
                "readonly_paths": run_as(NOBODY, sock, _spawn(readonly_paths=[str(private)])),
                "script": run_as(NOBODY, sock, lambda c: c._call(0x10, {"script": str(private / "secret.py")})),
                "writable_paths": run_as(NOBODY, sock, _spawn(writable_paths=["/usr/lib"])),
            }
            for field, result in refused.items():
                assert result.get("code") == "permission_denied", (field, result)
                assert field in result["message"], (field, result)
            # What it may read itself it may give an agent; limits default to the secure ones.
            allowed = run_as(NOBODY, sock, _spawn(readonly_paths=["/usr/share"]))
            assert allowed == {"ok": {"memory": 512 * 1024**2, "pids": 128, "cpu": 1.0}}, allowed
    finally:
        (private / "secret.py").unlink()
        private.rmdir()
