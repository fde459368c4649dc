"""The escapes and cross-agent leaks of issue 9, each attacked from inside an agent.

Each assertion states the secure outcome. While someone else's fix is in progress the test
carries ``@pytest.mark.escape``: a strict xfail, so the fix turns it into a failure and
the marker is removed then.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import SyscallError

from .conftest import API_KEY, HostileKernel

# --- SPAWN never makes a child looser than its parent --------------------------------------

@pytest.fixture(scope="module")
def host_dir() -> Iterator[Path]:
    """A host dir (with a script) that the attacker's view does not contain."""
    with tempfile.TemporaryDirectory(prefix="agentos-sec-host-") as directory:
        Path(directory).chmod(0o755)
        script = Path(directory, "host_script.py")
        script.write_text("import os\nprint(os.getuid())\n")
        script.chmod(0o644)
        yield Path(directory)


@pytest.fixture(scope="module")
def widening(hostile: HostileKernel, host_dir: Path) -> dict[str, Any]:
    return hostile.attack("spawn_widening",
                          {"host_dir": str(host_dir), "host_script": str(host_dir / "host_script.py")},
                          capabilities=["spawn"], limits={"pids": 16, "memory": "128Mi"})


SPAWN_FIELDS = ["sandboxed", "network", "readonly_paths", "writable_paths", "script", "cwd", "limits", "capabilities"]


@pytest.mark.parametrize("field", SPAWN_FIELDS)
def test_spawn_cannot_widen(widening: dict[str, Any], field: str) -> None:
    assert widening["outcomes"][field] == "permission_denied"
    message, details = widening["refusals"][field]
    assert field in message or field in details or details.get("field") == field, (message, details)


# --- secrets ------------------------------------------------------------------------------

def test_api_key_is_nowhere_an_agent_can_read(hostile: HostileKernel) -> None:
    report = hostile.attack("key_scan")
    assert API_KEY not in json.dumps(report["found"]), report["found"]


def test_another_agents_spawn_env_is_not_in_a_later_agents_memory(fresh: HostileKernel) -> None:
    # The scan finds the key where it was put on purpose, so its silence elsewhere means absence.
    control = fresh.attack("key_scan", env={"HANDED_OVER": API_KEY}, name="given-the-key")
    assert API_KEY in json.dumps(control["found"])
    later = fresh.attack("key_scan", name="later-agent")
    assert API_KEY not in json.dumps(later["found"]), later["found"]


def test_kernel_socket_in_view_gives_no_admin(hostile: HostileKernel) -> None:
    """The kernel's own socket and state dir bound into the agent's view (as a manifest putting
    them next to the scripts does): refused, masked, or a connection with the agent's identity."""
    try:
        agent = hostile.spawn("socket_by_path", str(hostile.process.socket_path),
                              readonly_paths=[str(hostile.process.root)])
    except SyscallError as exc:
        assert exc.code.value in ("permission_denied", "invalid_argument")
        return
    report = hostile.verdict(agent)
    if report["connect"] == "ok":
        assert report["you"]["admin"] is False and report["you"]["agent_id"] == report["own_id"]
        assert report["unsandboxed spawn"] == "permission_denied"


# --- other agents' mail, logs and list ----------------------------------------------------

def test_a_registered_name_never_takes_a_real_agents_mail(hostile: HostileKernel) -> None:
    squatter = hostile.spawn("squatter", "late1", "20", name="squatter")
    try:
        hostile.wait_output(squatter)
        victim = hostile.spawn("victim", "late1 is up", "10", name="late1")
        hostile.admin.wait(id=victim["id"], until="ready", timeout=60)
        hostile.admin.send("late1", "for late1 only")
        assert hostile.verdict(victim)["got"] == "for late1 only"
    finally:
        hostile.admin.kill(id=squatter["id"], grace=0)
    assert all(line.get("got") is None for line in hostile.output(squatter))


@pytest.fixture(scope="module")
def snooped(hostile: HostileKernel) -> dict[str, Any]:
    secret = f"model answer {os.urandom(8).hex()}"
    victim = hostile.spawn("victim", secret, name="private")
    try:
        hostile.admin.wait(id=victim["id"], until="ready", timeout=60)
        report = hostile.attack("snoop", "private", capabilities=[])
    finally:
        hostile.admin.kill(id=victim["id"], grace=0)
    report["secret"] = secret
    return report


def test_list_shows_an_agent_only_itself(snooped: dict[str, Any]) -> None:
    assert snooped["listed"] == ["snoop"]


def test_logs_of_another_agent_are_refused(snooped: dict[str, Any]) -> None:
    assert snooped["logs"] in ("permission_denied", "not_found")


# --- malformed requests: one typed answer each, never `internal`, never silence ------------

def _raw(hostile: HostileKernel, requests: list[tuple[int, str]], **options: Any) -> list[Any]:
    return hostile.attack("raw_requests", [list(r) for r in requests], "5", **options)["replies"]


NAN_REQUESTS = {
    "RECV timeout": (0x21, '{"timeout": NaN}'),
    "WAIT timeout": (0x13, '{"name": "raw-requests", "timeout": NaN}'),
    "KILL grace": (0x11, '{"name": "nobody-here", "grace": NaN}'),
}


def test_nan_durations_are_refused_and_timers_keep_firing(fresh: HostileKernel) -> None:
    replies = _raw(fresh, list(NAN_REQUESTS.values()))
    assert [r if isinstance(r, str) else r["code"] for r in replies] == ["invalid_argument"] * len(NAN_REQUESTS)
    # Another client's timer still fires: its RECV times out instead of hanging.
    with pytest.raises(SyscallError) as timed_out:
        fresh.admin.recv(timeout=0.1)
    assert timed_out.value.code.value == "timeout"


def test_lone_surrogate_still_gets_exactly_one_answer(hostile: HostileKernel) -> None:
    (reply,) = _raw(hostile, [(0x11, '{"id": "\\udfff"}')])
    assert reply != "no reply"
    assert reply["code"] in ("invalid_argument", "not_found")


MALFORMED = {
    "SPAWN limits.memory 1e400": (0x10, '{"command": ["/bin/true"], "limits": {"memory": 1e400}}'),
    "SPAWN limits.cpu 1e400": (0x10, '{"command": ["/bin/true"], "limits": {"cpu": 1e400}}'),
    "SPAWN capabilities [[admin]]": (0x10, '{"command": ["/bin/true"], "capabilities": [["admin"]]}'),
    "SPAWN args [{}]": (0x10, '{"command": ["/bin/true"], "args": [{}]}'),
    "WAIT timeout [1]": (0x13, '{"name": "raw-requests", "timeout": [1]}'),
    "KEYS limit 10**30": (0x33, '{"limit": 1000000000000000000000000000000}'),
    "STORE ttl -1e400": (0x30, '{"key": "k", "value": 1, "ttl": -1e400}'),
    "RECV timeout 1e400": (0x21, '{"timeout": 1e400}'),
}


@pytest.fixture(scope="module")
def malformed(hostile: HostileKernel) -> dict[str, Any]:
    replies = _raw(hostile, list(MALFORMED.values()), capabilities=["spawn", "state", "message"])
    return dict(zip(MALFORMED, replies))


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_field_is_invalid_argument(malformed: dict[str, Any], case: str) -> None:
    reply = malformed[case]
    assert reply != "no reply"
    assert reply["code"] == "invalid_argument", reply
