"""A child is never looser than its parent: SPAWN attempts made from inside a confined agent.

Each attack runs in a sandboxed agent (no network, small limits, only ``spawn`` and
``kill``) that tries to give a child more than it holds. Every widening must come
back ``permission_denied`` naming the field; narrowing must work.
"""
from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from agentos.testing.kernel import KernelProcess

from .conftest import agent, require_cgroup_limits

PARENT_LIMITS = {"memory": "256Mi", "pids": 16, "cpu": 0.5}


def _attempts(kernel: KernelProcess, payloads: list[dict[str, Any]], **parent: Any) -> list[dict[str, Any]]:
    """Run the payloads as SPAWNs from inside a confined agent; its verdict per payload."""
    client = kernel.client()
    options: dict[str, Any] = {"limits": PARENT_LIMITS, "capabilities": ["spawn", "kill"], **parent}
    info = client.spawn("parent", agent("spawn_attempts"), args=[json.dumps(payloads)], **options)
    end = client.wait(id=info["id"], timeout=120)
    output = client.logs(id=info["id"])
    assert end["exit_code"] == 0, output
    [line] = [line for line in output.splitlines() if line.startswith("VERDICTS ")]
    verdicts: list[dict[str, Any]] = json.loads(line.removeprefix("VERDICTS "))
    assert len(verdicts) == len(payloads)
    return verdicts


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_cgroup_limits()
    k = KernelProcess(tmp_path_factory.mktemp("confinement")).start()
    try:
        yield k
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A directory the parent sees (``visible``) and one it does not (``hidden``)."""
    root = tmp_path_factory.mktemp("host")
    root.chmod(0o755)
    visible, hidden = root / "visible", root / "hidden"
    visible.mkdir(mode=0o755)
    hidden.mkdir(mode=0o755)
    (hidden / "payload.py").write_text("print('escaped')\n")
    tool = hidden / "tool"
    tool.write_text("#!/bin/sh\necho escaped\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (visible / "escape.py").symlink_to(hidden / "payload.py")
    (visible / "inside.py").write_text("import time\ntime.sleep(60)\n")
    # Root's alone, inside a directory the parent sees as one of the others: the parent cannot
    # read it, so no child of its may (the sandbox would show a child's own bind of it idmapped).
    private = visible / "private"
    private.mkdir(mode=0o700)
    (private / "secret.py").write_text("print(open(__file__).read())\n")
    return {"visible": str(visible), "hidden": str(hidden), "root": str(root), "private": str(private)}


def test_every_widening_is_refused_naming_its_field(kernel: KernelProcess, host: dict[str, str]) -> None:
    sleeper = agent("sleeper")
    widenings: list[tuple[str, dict[str, Any]]] = [
        ("sandboxed", {"script": sleeper, "sandboxed": False}),
        ("network", {"script": sleeper, "network": True}),
        ("allow_degraded", {"script": sleeper, "allow_degraded": True}),
        ("readonly_paths", {"script": sleeper, "readonly_paths": [host["hidden"]]}),
        ("readonly_paths", {"script": sleeper, "readonly_paths": ["/"]}),
        ("writable_paths", {"script": sleeper, "writable_paths": [host["visible"]]}),
        ("script", {"script": f"{host['hidden']}/payload.py"}),
        # A symlink inside the view that points out of it, and a path that climbs out with '..'.
        ("script", {"script": f"{host['visible']}/escape.py"}),
        ("script", {"script": f"{host['visible']}/../hidden/payload.py"}),
        ("command", {"command": [f"{host['hidden']}/tool"]}),
        ("readonly_paths", {"script": sleeper, "readonly_paths": [host["private"]]}),
        ("script", {"script": f"{host['private']}/secret.py"}),
        ("cwd", {"script": sleeper, "cwd": host["hidden"]}),
        ("limits.pids", {"script": sleeper, "limits": {"pids": 17}}),
        ("limits.memory", {"script": sleeper, "limits": {"memory": "1Gi"}}),
        ("limits.memory", {"script": sleeper, "limits": {"memory": None}}),
        ("limits.cpu", {"script": sleeper, "limits": {"cpu": 1}}),
        ("limits.cpu", {"script": sleeper, "limits": {"cpu_quota": 60000}}),
        ("llm.tokens", {"script": sleeper, "llm": {"tokens": 5000}}),
        ("egress", {"script": sleeper, "egress": ["example.com"]}),
        ("capabilities", {"script": sleeper, "capabilities": ["admin"]}),
    ]
    verdicts = _attempts(kernel, [payload for _, payload in widenings],
                         readonly_paths=[host["visible"]], llm={"tokens": 1000})
    for (field, payload), verdict in zip(widenings, verdicts):
        assert not verdict["ok"], f"{payload} was allowed: {verdict}"
        assert verdict["code"] == "permission_denied", (payload, verdict)
        assert verdict["details"]["field"] == field, (payload, verdict)
    assert not any(a["name"].startswith("sleeper") for a in kernel.client().list_agents(status="running"))


def test_narrowing_works_and_defaults_are_capped_at_the_parent(kernel: KernelProcess,
                                                               host: dict[str, str]) -> None:
    inside = f"{host['visible']}/inside.py"
    payloads: list[dict[str, Any]] = [
        {"name": "capped", "script": inside},
        {"name": "narrower", "script": inside, "limits": {"memory": "64Mi", "pids": 4, "cpu": 0.25},
         "readonly_paths": [host["visible"]]},
        {"name": "by-path", "command": ["/bin/true"]},
    ]
    verdicts = _attempts(kernel, payloads, readonly_paths=[host["visible"]])
    assert all(v["ok"] for v in verdicts), verdicts
    capped, narrower, _ = (v["info"] for v in verdicts)
    assert capped["limits"] == {"memory": 256 * 1024**2, "pids": 16, "cpu": 0.5}
    assert narrower["limits"] == {"memory": 64 * 1024**2, "pids": 4, "cpu": 0.25}
    for info in (capped, narrower):
        assert info["isolation"]["sandbox"]["sandboxed"] is True
        assert info["isolation"]["sandbox"]["network"] == "loopback"
        assert info["parent"] is not None


def test_admin_spawns_get_the_secure_defaults(kernel: KernelProcess) -> None:
    client = kernel.client()
    info = client.spawn("defaults", agent("sleeper"))
    try:
        assert info["limits"] == {"memory": 512 * 1024**2, "pids": 128, "cpu": 1.0}
        assert info["isolation"]["degraded"] == []
    finally:
        client.kill(id=info["id"], grace=0)


def test_unlimited_needs_an_explicit_null(kernel: KernelProcess) -> None:
    client = kernel.client()
    info = client.spawn("unlimited", agent("sleeper"), limits={"memory": None, "pids": None, "cpu": None})
    try:
        assert info["limits"] == {"memory": None, "pids": None, "cpu": None}
    finally:
        client.kill(id=info["id"], grace=0)


def test_agents_see_only_themselves_and_their_descendants(kernel: KernelProcess, tmp_path: Path) -> None:
    client = kernel.client()
    bystander = client.spawn("bystander", agent("printer"), args=["2", "0", "600"])
    script = tmp_path / "observer.py"
    tmp_path.chmod(0o755)
    script.write_text(OBSERVER.format(bystander=bystander["id"]))
    script.chmod(0o644)
    try:
        for capabilities, sees_all in ((["spawn", "kill"], False), (["observe"], True)):
            info = client.spawn(f"observer-{sees_all}", str(script), capabilities=capabilities)
            client.wait(id=info["id"], timeout=120)
            [line] = [x for x in client.logs(id=info["id"]).splitlines() if x.startswith("SEEN ")]
            seen = json.loads(line.removeprefix("SEEN "))
            if sees_all:
                assert bystander["id"] in seen["listed"] and seen["logs"] == "ok" and seen["wait"] == "ok"
                assert seen["kill"] == "permission_denied"  # seeing is not killing
            else:
                assert seen["listed"] == [info["id"]]
                # Not even whether it exists: the same answer as for an agent that never was.
                assert seen["logs"] == seen["wait"] == seen["kill"] == "not_found"
    finally:
        client.kill(id=bystander["id"], grace=0)


OBSERVER = """
import json
import agentos
from agentos.errors import SyscallError

with agentos.Client() as kernel:
    seen = {{"listed": [a["id"] for a in kernel.list_agents()]}}
    for what, call in (("logs", lambda: kernel.logs(id="{bystander}")),
                       ("wait", lambda: kernel.wait(id="{bystander}", timeout=0)),
                       ("kill", lambda: kernel.kill(id="{bystander}", grace=0))):
        try:
            call()
            seen[what] = "ok"
        except SyscallError as exc:
            seen[what] = "timeout" if exc.code.value == "timeout" else exc.code.value
    if seen["wait"] == "timeout":
        seen["wait"] = "ok"
print("SEEN " + json.dumps(seen), flush=True)
"""


def test_a_connection_by_path_from_inside_an_agent_is_that_agent(kernel: KernelProcess, tmp_path: Path) -> None:
    """An unsandboxed agent runs as the kernel's uid and can reach the socket by path: it must
    still come in as itself (no admin), and so cannot start an unsandboxed shell."""
    tmp_path.chmod(0o755)
    script = tmp_path / "by_path.py"
    script.write_text(BY_PATH)
    client = kernel.client()
    info = client.spawn("by-path", str(script), sandboxed=False,
                        env={"KERNEL_SOCKET": str(kernel.socket_path)})
    client.wait(id=info["id"], timeout=120)
    [line] = [x for x in client.logs(id=info["id"]).splitlines() if x.startswith("BYPATH ")]
    result = json.loads(line.removeprefix("BYPATH "))
    assert result["perms"]["agent"] == info["id"] and result["perms"]["admin"] is False
    assert result["spawn"] == "permission_denied"
    # Its descendants too: a grandchild process, not the agent itself, connects.
    assert result["grandchild"] == info["id"]


BY_PATH = """
import json, os, subprocess, sys
import agentos
from agentos.errors import SyscallError

path = os.environ["KERNEL_SOCKET"]
result = {}
with agentos.Client(path) as kernel:
    result["perms"] = kernel._call(0x40, {})
    try:
        kernel.spawn("root-shell", command=["/bin/sh", "-c", "sleep 60"], sandboxed=False)
        result["spawn"] = "allowed"
    except SyscallError as exc:
        result["spawn"] = exc.code.value
code = "import agentos,json,os; c=agentos.Client(os.environ['KERNEL_SOCKET']); print(c._call(0x40, {})['agent'])"
result["grandchild"] = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
print("BYPATH " + json.dumps(result), flush=True)
"""


def test_a_sandboxed_agents_home_is_its_own(kernel: KernelProcess, tmp_path: Path) -> None:
    """Not the kernel's (a root kernel's /root is masked in the view), and writable."""
    tmp_path.chmod(0o755)
    script = tmp_path / "home.py"
    script.write_text("import os, pathlib\n"
                      "home = pathlib.Path.home()\n"
                      "(home / '.agentrc').write_text('x')\n"
                      "print('HOME', home, os.environ.get('TMPDIR'), flush=True)\n")
    client = kernel.client()
    info = client.spawn("home", str(script))
    end = client.wait(id=info["id"], timeout=120)
    output = client.logs(id=info["id"])
    assert end["exit_code"] == 0, output
    assert "HOME /tmp None" in output


def test_no_writable_path_may_hold_the_kernels_socket_state_or_a_secret(kernel: KernelProcess) -> None:
    """A mask hides a path, not a directory above it: an agent that may write above a mask could
    rename that directory, and its next child would see the secret under the new name."""
    from agentos import PermissionDenied

    client = kernel.client()
    for writable in (kernel.root, kernel.state_dir, "/etc"):
        with pytest.raises(PermissionDenied, match="holds") as refused:
            client.spawn("above-a-mask", agent("sleeper"), writable_paths=[str(writable)])
        assert refused.value.details["field"] == "writable_paths"
