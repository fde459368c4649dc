"""START: an ended agent spawned again from the SPAWN request the kernel remembers, as the caller;
only its ancestors (or an admin) may; a waiting restart is cancelled; a running agent is left alone."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentos import NotFound
from agentos.manifest import loads
from agentos.protocol import Op

AGENTS = Path(__file__).parent / "agents"


def spawn_declared(client: Any, tmp_path: Path, restart: str) -> dict[str, Any]:
    """An agent as a manifest declares it: env, args and a restart policy all remembered."""
    (tmp_path / "echo.py").write_text(textwrap.dedent("""\
        import os, sys, time
        print(os.environ["GREETING"], *sys.argv[1:], flush=True)
        while True:
            time.sleep(1)
        """))
    manifest = loads(textwrap.dedent(f"""\
        agents:
          echo:
            script: echo.py
            args: [twice]
            env: {{GREETING: hello}}
            sandbox: {{enabled: false}}
            limits: {{memory: unlimited, cpu: unlimited, pids: unlimited}}
            restart: {restart}
        """), tmp_path / "team.yaml")
    return client._call(Op.SPAWN, manifest.agents[0].to_spawn_request())


def output_of(client: Any, agent_id: str, text: str) -> str:
    """The agent's output until it has printed ``text``: an unbuffered print of several
    arguments is several writes, so ``text`` may come in more than one chunk."""
    seen = ""
    for chunk in client.follow_logs(id=agent_id):
        seen += chunk
        if text in seen:
            return seen
    raise AssertionError(f"{agent_id} ended without printing {text!r}: {seen!r}")


def test_a_stopped_agent_starts_again_as_it_was_asked(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    first = spawn_declared(client, tmp_path, "{policy: always, backoff: 20ms}")
    assert output_of(client, first["id"], "hello twice")
    assert client.kill("echo", grace=5)["status"] == "killed"
    assert client.hello()["capabilities"]["supervisor"]["restarting"] == []  # stopped stays stopped

    again = client.start("echo")
    assert again["started"] is True and again["id"] != first["id"] and again["status"] == "running"
    assert again["argv"] == first["argv"] and again["restarts"] == 0
    assert "hello twice" in output_of(client, again["id"], "hello twice")
    running = client.start("echo")
    assert running["started"] is False and running["id"] == again["id"]
    # Started again, it is supervised as before: its policy brings back a crash (a SIGKILL nobody
    # in agentos sent).
    with client.subscribe("agent.restarted") as events:
        os.kill(again["pid"], 9)
        restarted = next(iter(events))
    assert restarted["previous_id"] == again["id"]
    client.kill("echo", grace=5)
    # An older process, by id: what it was asked is started again under the same name.
    by_id = client.start(id=first["id"])
    assert by_id["started"] is True and by_id["name"] == "echo"
    client.kill("echo", grace=5)


def test_start_takes_over_a_waiting_restart(kernel, tmp_path: Path) -> None:
    client = kernel.client()
    first = spawn_declared(client, tmp_path, "{policy: always, backoff: 1h, backoff_max: 1h}")
    client._call(Op.KILL, {"id": first["id"], "wait": True, "grace": 5})
    # KILL stops it for good; a failure ending would wait for its restart: make one.
    second = spawn_declared(client, tmp_path, "{policy: always, backoff: 1h, backoff_max: 1h}")
    os.kill(second["pid"], 9)
    client.wait(id=second["id"], timeout=60)
    assert client.hello()["capabilities"]["supervisor"]["restarting"] == ["echo"]
    assert client.start("echo")["started"] is True
    assert client.hello()["capabilities"]["supervisor"]["restarting"] == []
    assert len(client.list_agents(name="echo", status="running")) == 1
    client.kill("echo", grace=5)


def test_an_unknown_agent_is_not_found(kernel) -> None:
    with pytest.raises(NotFound, match="no agent named 'ghost'"):
        kernel.client().start("ghost")


def test_only_an_ancestor_may_start_an_agent_again(kernel) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: agents spawn sandboxed children")
    client = kernel.client()
    caps = ["spawn", "kill", "observe"]
    owner = client.spawn("owner", str(AGENTS / "starter.py"), args=["own"], capabilities=caps)
    line = output_of(client, owner["id"], "started")
    started, kid_id, parent = line.split()[1:4]
    assert (started, parent) == ("true", owner["id"])
    client.kill("kid-of-owner", grace=5)
    other = client.spawn("other", str(AGENTS / "starter.py"), args=["other", "kid-of-owner"], capabilities=caps)
    assert "refused permission_denied" in output_of(client, other["id"], "refused")
    assert [a["status"] for a in client.list_agents(name="kid-of-owner")] == ["killed", "killed"]
    for name in ("other", "owner"):
        client.kill(name, grace=5)
