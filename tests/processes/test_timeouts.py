"""SPAWN's ``timeout`` (wall time from start, paused time included) and ``idle_timeout`` (no syscall
of the agent's for that long, paused time excluded): the kernel ends the agent ``timed_out``, the
supervisor counts it a failure, and a child never outlives its spawner's timeout."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from agentos import Client, InvalidArgument, PermissionDenied
from agentos.manifest.model import AgentSpec
from agentos.processes.request import HOST, SpawnRequest
from agentos.protocol.requests import SpawnRequestWire
from agentos.testing.kernel import KernelProcess

from .conftest import agent, require_cgroup_limits


@pytest.fixture(scope="module")
def client(shared_kernel: KernelProcess):
    with shared_kernel.client(timeout=60) as c:
        yield c


def _one(client: Client, agent_id: str) -> dict[str, Any]:
    [info] = [a for a in client.list_agents() if a["id"] == agent_id]
    return info


def test_an_agent_past_its_timeout_is_timed_out(client: Client) -> None:
    info = client.spawn("short-lived", agent("sleeper"), timeout="300ms")
    assert info["timeout"] == 0.3
    ended = client.wait(id=info["id"], timeout=60)
    assert ended["status"] == "timed_out" and ended["reason"] == "timeout"


def test_an_idle_agent_is_timed_out_and_syscalls_keep_it_alive(client: Client) -> None:
    # 150 HELLOs 20 ms apart span over 3 s, more than its idle_timeout: each started the clock again.
    info = client.spawn("idler", agent("mail_printer"), args=["150"], idle_timeout=2)
    ended = client.wait(id=info["id"], timeout=60)
    assert ended["status"] == "timed_out" and ended["reason"] == "idle_timeout"
    assert "active" in client.logs(id=info["id"])


def test_paused_time_counts_toward_timeout_and_a_frozen_agent_still_ends(client: Client) -> None:
    require_cgroup_limits()
    info = client.spawn("paused-out", agent("sleeper"), timeout=1)
    client.wait(id=info["id"], until="ready", timeout=60)
    client.pause(id=info["id"])
    ended = client.wait(id=info["id"], timeout=60)
    assert ended["status"] == "timed_out" and ended["reason"] == "timeout"


def test_paused_time_does_not_count_toward_idle_timeout(client: Client) -> None:
    require_cgroup_limits()
    info = client.spawn("paused-idle", agent("sleeper"), idle_timeout="500ms")
    client.pause(id=info["id"])  # before its first idle period can end (WAIT is not its syscall)
    try:
        time.sleep(1.5)  # three idle periods, all paused
        assert _one(client, info["id"])["status"] == "paused"
        client.resume(id=info["id"])
        ended = client.wait(id=info["id"], timeout=60)
        assert ended["status"] == "timed_out" and ended["reason"] == "idle_timeout"
    finally:
        client.kill(id=info["id"], grace=0)


def test_the_supervisor_restarts_a_timed_out_agent_as_a_failure(client: Client) -> None:
    info = client.spawn("restarted-timeout", agent("sleeper"), timeout="200ms",
                        restart={"policy": "on-failure", "max_restarts": 1, "backoff": 0.05})
    try:
        while _one(client, info["id"])["status"] == "running":
            time.sleep(0.02)
        while not any(a["restarts"] >= 1 for a in client.list_agents(name="restarted-timeout")):
            time.sleep(0.02)
    finally:
        for running in client.list_agents(name="restarted-timeout", status="running"):
            client.kill(id=running["id"], grace=0)


def test_a_child_never_outlives_its_spawner_timeout() -> None:
    spawner = replace(HOST, deadline=time.monotonic() + 100)

    def parse(**fields: Any) -> SpawnRequest:
        wire = msgspec.convert({"command": ["/bin/true"], **fields}, SpawnRequestWire)
        return SpawnRequest.parse(wire, spawner)

    inherited = parse()
    assert inherited.timeout is not None and 99 < inherited.timeout <= 100
    assert inherited.deadline == spawner.deadline
    assert parse(timeout=10).timeout == 10
    with pytest.raises(PermissionDenied) as refused:
        parse(timeout="5m")
    assert refused.value.details["field"] == "timeout"
    assert parse(idle_timeout="10m").idle_timeout == 600  # idleness is the child's own: no ceiling
    with pytest.raises(InvalidArgument) as zero:
        parse(timeout=0)
    assert zero.value.details["field"] == "timeout"


def test_manifest_timeouts_reach_spawn() -> None:
    request = AgentSpec(name="w", command=("/bin/true",), timeout=30.0, idle_timeout=5.0).to_spawn_request()
    assert request["timeout"] == 30.0 and request["idle_timeout"] == 5.0
    assert "timeout" not in AgentSpec(name="w", command=("/bin/true",)).to_spawn_request()
