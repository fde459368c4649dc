"""The kernel's supervisor, end to end: a manifest's restart policy, a real kernel, real agents ending."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agentos import InvalidArgument
from agentos.manifest import loads
from agentos.protocol import Op
from agentos.testing.kernel import KernelProcess

#: ``agentos kernel`` whose ledger commits each agent's row late (slow_ledger_kernel.py).
SLOW_LEDGER = [sys.executable, str(Path(__file__).with_name("slow_ledger_kernel.py"))]
#: What an agent that always fails publishes under on-failure with max_restarts 2, in order.
TWO_RESTARTS_THEN_GIVEN_UP = [
    "agent.started", "agent.exited",
    "agent.started", "agent.restarted", "agent.exited",
    "agent.started", "agent.restarted", "agent.exited",
    "agent.given_up"]


def spawn_from_manifest(client: Any, tmp_path: Path, name: str, code: str, restart: str,
                        limits: str = "{memory: unlimited, cpu: unlimited, pids: unlimited}") -> dict[str, Any]:
    """SPAWN the agent a one-agent manifest declares (no sandbox, and by default no cgroup limits)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    manifest = loads(textwrap.dedent(f"""\
        agents:
          {name}:
            script: {name}.py
            sandbox: {{enabled: false}}
            limits: {limits}
            restart: {restart}
        """), tmp_path / "team.yaml")
    return client._call(Op.SPAWN, manifest.agents[0].to_spawn_request())


def waiting_restarts(client: Any) -> list[str]:
    return client.hello()["capabilities"]["supervisor"]["restarting"]


def events_until(subscription: Any, name: str, last_topic: str) -> list[dict[str, Any]]:
    seen = []
    for event in subscription:
        if event.get("name") == name:
            seen.append(event)
            if event["topic"] == last_topic:
                return seen
    raise AssertionError(f"subscription ended before {last_topic}: {seen}")


def test_on_failure_restarts_with_backoff_then_marks_failed(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    with client.subscribe("agent.*") as events:
        first = spawn_from_manifest(client, tmp_path, "crashy", "import sys; sys.exit(3)\n",
                                    "{policy: on-failure, max_restarts: 2, window: 1h, backoff: 20ms}")
        seen = events_until(events, "crashy", "agent.given_up")
    assert [e["topic"] for e in seen] == TWO_RESTARTS_THEN_GIVEN_UP
    ids = [e["id"] for e in seen if e["topic"] == "agent.started"]
    assert ids[0] == first["id"] and len(set(ids)) == 3
    restarted = [e for e in seen if e["topic"] == "agent.restarted"]
    assert [(e["id"], e["previous_id"], e["restarts"]) for e in restarted] == [(ids[1], ids[0], 1), (ids[2], ids[1], 2)]
    # Backoff doubles: 20 ms, then 40 ms.
    assert [e["delay"] for e in restarted] == [0.02, 0.04]
    assert all(e["status"] == "failed" and e["exit_code"] == 3 for e in seen if e["topic"] == "agent.exited")
    failed = seen[-1]
    assert failed["id"] == ids[2] and failed["restarts"] == 2 and "2 restart(s) within 3600s" in failed["reason"]
    assert waiting_restarts(client) == []
    assert sorted(a["id"] for a in client.list_agents(name="crashy")) == sorted(ids)


def test_a_restart_is_announced_before_the_new_agent_ends_even_while_its_row_commits(tmp_path: Path) -> None:
    # The restarted agent exits while its SPAWN still waits for its ledger row (300 ms late
    # here): its agent.restarted must still come before its agent.exited.
    kernel = KernelProcess(tmp_path / "k", command=SLOW_LEDGER, env={"AGENTOS_TEST_LEDGER_DELAY": "0.3"}).start()
    try:
        client = kernel.client()
        with client.subscribe("agent.*") as events:
            spawn_from_manifest(client, tmp_path, "crashy", "import sys; sys.exit(3)\n",
                                "{policy: on-failure, max_restarts: 2, window: 1h, backoff: 10ms}")
            seen = events_until(events, "crashy", "agent.given_up")
        assert [e["topic"] for e in seen] == TWO_RESTARTS_THEN_GIVEN_UP
        ended = [e["id"] for e in seen if e["topic"] == "agent.exited"]
        assert ended == [e["id"] for e in seen if e["topic"] == "agent.started"]
    finally:
        kernel.stop_checked()


def test_clean_exit_is_not_a_failure(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    info = spawn_from_manifest(client, tmp_path, "done", "print('done')\n", "{policy: on-failure, backoff: 20ms}")
    assert client.wait(id=info["id"], timeout=60)["status"] == "exited"
    # The decision is taken when the exit is published, before WAIT answers.
    assert waiting_restarts(client) == []
    assert len(client.list_agents(name="done")) == 1


def test_always_restarts_a_clean_exit_and_kill_cancels_the_wait(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    info = spawn_from_manifest(client, tmp_path, "loop", "print('bye')\n",
                               "{policy: always, backoff: 1h, backoff_max: 1h}")
    client.wait(id=info["id"], timeout=60)
    assert waiting_restarts(client) == ["loop"]
    assert client.kill("loop")["killed"] is False
    assert waiting_restarts(client) == []
    assert len(client.list_agents(name="loop")) == 1


def test_giving_up_marks_the_agent_failed(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    with client.subscribe("agent.*") as events:
        spawn_from_manifest(client, tmp_path, "quick", "print('done')\n",
                            "{policy: always, max_restarts: 1, backoff: 10ms}")
        seen = events_until(events, "quick", "agent.given_up")
    assert [e["status"] for e in seen if e["topic"] == "agent.exited"] == ["exited", "exited"]
    assert seen[-1]["status"] == "exited"
    rows = sorted(client.list_agents(name="quick"), key=lambda a: a["started_at"])
    assert [a["status"] for a in rows] == ["exited", "failed"]
    assert rows[-1]["restarts"] == 1


def test_an_oom_killed_agent_is_restarted(kernel, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a cgroup memory limit")
    hog = ("chunks = []\n"
           "while True:\n"
           "    chunk = bytearray(8 << 20)\n"
           "    chunk[::4096] = b'x' * len(chunk[::4096])\n"
           "    chunks.append(chunk)\n")
    client = kernel.client()
    with client.subscribe("agent.*") as events:
        spawn_from_manifest(client, tmp_path, "hog", hog, "{policy: on-failure, max_restarts: 1, backoff: 10ms}",
                            limits="{memory: 48Mi, cpu: unlimited, pids: unlimited}")
        seen = events_until(events, "hog", "agent.given_up")
    assert [e["topic"] for e in seen] == ["agent.started", "agent.oom_killed", "agent.started", "agent.restarted",
                                          "agent.oom_killed", "agent.given_up"]
    assert seen[-1]["status"] == "oom_killed"


def test_an_agent_that_is_killed_stays_down(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    spawn_from_manifest(client, tmp_path, "steady", "import time\nwhile True: time.sleep(1)\n",
                        "{policy: always, backoff: 20ms}")
    assert client.kill("steady", grace=5)["status"] == "killed"
    assert waiting_restarts(client) == []


def test_an_invalid_restart_refuses_the_spawn(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    script = tmp_path / "a.py"
    script.write_text("")
    with pytest.raises(InvalidArgument, match=r"Invalid enum value 'sometimes' - at `\$.restart.policy`"):
        client._call(Op.SPAWN, {"name": "a", "script": str(script), "sandboxed": False,
                                "restart": {"policy": "sometimes"}})
    assert client.list_agents() == []



def test_at_shutdown_agents_are_killed_and_never_restarted(tmp_path: Path) -> None:
    """The kernel drops its connections first, so an SDK agent blocked in a syscall sees its kernel
    vanish and exits 1 before it is sent SIGTERM: still ``killed``, and no restart is scheduled."""
    from agentos.testing.kernel import KernelProcess

    kernel = KernelProcess(tmp_path / "k").start()
    try:
        client = kernel.client()
        code = "import agentos\nprint('waiting', flush=True)\nagentos.Client().recv(timeout=3600)\n"
        agents = [spawn_from_manifest(client, tmp_path, name, code, f"{{policy: {policy}, backoff: 10ms}}")
                  for name, policy in (("blocked", "on-failure"), ("looping", "always"))]
        for agent in agents:
            while "waiting" not in client.logs(id=agent["id"]):
                assert client.list_agents(name=agent["name"])[0]["status"] == "running"
                time.sleep(0.02)
    finally:
        kernel.stop_checked()
    log = kernel.log()
    for agent in agents:
        assert f"agent {agent['name']} ({agent['id']}) killed" in log, log
        assert f"agent {agent['name']} ({agent['id']}) failed" not in log, log
    assert "restarting in" not in log and "restarted as" not in log, log
