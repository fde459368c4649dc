"""PAUSE and RESUME: a paused agent (and its subtree) is frozen by the cgroup freezer, shows
``paused``, uses no CPU, keeps its mail, and can still be killed; without a freezer PAUSE is
refused, never faked."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest

from agentos import Client, NotFound, Unavailable
from agentos.testing.kernel import KernelProcess

from .conftest import agent, kernel_cgroup_dirs, require_cgroup_limits
from .test_no_cgroups import bare_kernel  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def client(shared_kernel: KernelProcess):
    require_cgroup_limits()
    with shared_kernel.client(timeout=60) as c:
        yield c


def _started(client: Client, name: str, script: str, *args: str, **options: Any) -> dict[str, Any]:
    info = client.spawn(name, agent(script), args=list(args), **options)
    client.wait(id=info["id"], until="ready", timeout=60)
    return info


def _one(client: Client, agent_id: str) -> dict[str, Any]:
    [info] = [a for a in client.list_agents() if a["id"] == agent_id]
    return info


def _cpu(client: Client, agent_id: str) -> int:
    usage = _one(client, agent_id)["usage"]["cpu_usage_usec"]
    assert usage is not None
    return int(usage)


def _until_in_logs(client: Client, agent_id: str, text: str) -> None:
    while text not in client.logs(id=agent_id):
        assert _one(client, agent_id)["status"] in ("running", "paused"), client.logs(id=agent_id)
        time.sleep(0.02)


def _child_of(client: Client, parent_id: str) -> str:
    """The id of the child the ``spawner`` agent reports."""
    while not (found := re.search(r"^child ([0-9a-f]+)$", client.logs(id=parent_id), re.M)):
        assert _one(client, parent_id)["status"] == "running", client.logs(id=parent_id)
        time.sleep(0.02)
    return found.group(1)


def test_a_paused_agent_uses_no_cpu_until_resumed(client: Client) -> None:
    spinner = _started(client, "spin", "busy")
    try:
        reply = client.pause("spin")
        assert reply["paused"] is True and reply["status"] == "paused"
        assert _one(client, spinner["id"])["status"] == "paused"
        assert [a["id"] for a in client.list_agents(status="paused")] == [spinner["id"]]
        # "running" selects every live agent, a paused one too.
        assert spinner["id"] in [a["id"] for a in client.list_agents(status="running")]
        before = _cpu(client, spinner["id"])
        time.sleep(0.3)  # a spinning agent would use most of it
        assert _cpu(client, spinner["id"]) == before
        assert client.pause("spin")["paused"] is True  # already paused: nothing changes
        reply = client.resume("spin")
        assert reply["resumed"] is True and reply["status"] == "running"
        while _cpu(client, spinner["id"]) == before:
            time.sleep(0.01)
        assert client.resume("spin")["resumed"] is False
    finally:
        client.kill("spin", grace=0)


def test_killing_a_paused_agent_completes_and_leaves_no_cgroup(client: Client,
                                                               shared_kernel: KernelProcess) -> None:
    spinner = _started(client, "spin-kill", "busy")
    client.pause("spin-kill")
    ended = client.kill("spin-kill", grace=5)
    assert ended["killed"] and ended["status"] == "killed"
    assert shared_kernel.proc is not None
    for directory in kernel_cgroup_dirs(shared_kernel.pid):
        assert not (directory / spinner["id"]).exists()
    assert client.pause(id=spinner["id"])["paused"] is False  # ended: nothing to pause


def test_pausing_a_parent_freezes_its_subtree(client: Client) -> None:
    parent = _started(client, "tree", "spawner", capabilities=["spawn"])
    child_id = _child_of(client, parent["id"])
    client.wait(id=child_id, until="ready", timeout=60)
    try:
        client.pause(id=parent["id"])
        assert _one(client, parent["id"])["status"] == _one(client, child_id)["status"] == "paused"
        # The child can be stopped alone while its parent stays paused.
        assert client.kill(id=child_id, grace=5)["status"] == "killed"
        assert _one(client, parent["id"])["status"] == "paused"
        assert client.resume(id=parent["id"])["status"] == "running"
    finally:
        client.kill(id=parent["id"], grace=0)


def test_an_agent_paused_twice_thaws_when_both_resume(client: Client) -> None:
    parent = _started(client, "holds", "spawner", capabilities=["spawn"])
    child_id = _child_of(client, parent["id"])
    client.wait(id=child_id, until="ready", timeout=60)
    try:
        client.pause(id=child_id)
        client.pause(id=parent["id"])
        client.resume(id=parent["id"])
        assert _one(client, parent["id"])["status"] == "running"
        assert _one(client, child_id)["status"] == "paused"  # its own PAUSE still holds it
        client.pause(id=parent["id"])
        client.resume(id=child_id)
        assert _one(client, child_id)["status"] == "paused"  # the parent's does
        client.resume(id=parent["id"])
        assert _one(client, child_id)["status"] == "running"
    finally:
        client.kill(id=parent["id"], grace=0)


def test_mail_for_a_paused_agent_waits_and_the_kernel_does_not(client: Client) -> None:
    reader = _started(client, "paused-reader", "mail_printer")
    _until_in_logs(client, reader["id"], "listening")
    try:
        client.pause(id=reader["id"])
        big = "x" * 200_000
        for index in range(40):  # ~8 MB of replies: more than its socket buffer holds
            client.send(reader["id"], f"{index} {big}")
        assert client.noop(b"still here") == b"still here"
        assert "mail 0" not in client.logs(id=reader["id"])
        client.resume(id=reader["id"])
        _until_in_logs(client, reader["id"], "mail 39 ")
        lines = [line.split()[1] for line in client.logs(id=reader["id"], tail=16 << 20).splitlines()
                 if line.startswith("mail ")]
        assert lines == [str(i) for i in range(40)]
    finally:
        client.kill(id=reader["id"], grace=0)


def test_pause_of_an_unknown_agent_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.pause("nobody-here")
    with pytest.raises(NotFound):
        client.resume(id="0123456789ab")


def test_pause_without_a_freezer_is_refused_and_reported(bare_kernel: KernelProcess) -> None:  # noqa: F811
    client = bare_kernel.client()
    assert client.hello()["capabilities"]["processes"]["cgroups"]["freezer"] is False
    info = client.spawn("unfreezable", agent("sleeper"), sandboxed=False, allow_degraded=True)
    try:
        assert info["isolation"]["cgroup"]["pause"] is False
        with pytest.raises(Unavailable, match="freezer"):
            client.pause("unfreezable")
        assert _one(client, info["id"])["status"] == "running"
    finally:
        client.kill("unfreezable", grace=0)


def test_hello_and_isolation_report_the_freezer(client: Client) -> None:
    assert client.hello()["capabilities"]["processes"]["cgroups"]["freezer"] is True
    info = client.spawn("report", agent("sleeper"))
    try:
        assert info["isolation"]["cgroup"]["pause"] is True
    finally:
        client.kill("report", grace=0)


def test_cli_pause_resume_and_ps(shared_kernel: KernelProcess, client: Client,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from agentos.cli.main import main

    _started(client, "cli-paused", "sleeper")
    socket = ["--socket", str(shared_kernel.socket_path)]
    try:
        assert main(["pause", "cli-paused", *socket]) == 0
        assert "cli-paused" in capsys.readouterr().out
        assert main(["ps", *socket]) == 0
        [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cli-paused ")]
        assert " paused " in row
        assert main(["resume", "cli-paused", *socket]) == 0
        assert client.list_agents(name="cli-paused")[0]["status"] == "running"
    finally:
        client.kill("cli-paused", grace=0)
