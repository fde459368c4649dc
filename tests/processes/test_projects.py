"""Projects: agent names are unique within a project, every lookup by name looks in the caller's
project first, an agent's children stay in its project, and mail, state and registered names are
the project's own until PURGE wipes them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentos import AlreadyExists, Busy, InvalidArgument, NotFound
from agentos.protocol import Op

AGENTS = Path(__file__).parent / "agents"
SLEEPER = str(AGENTS / "sleeper.py")


def probe(client: Any, name: str, project: str | None, steps: list[list[Any]],
          capabilities: list[str] | None = None) -> list[Any]:
    """Spawn a project_probe agent running ``steps``; the result of each, in order."""
    info = client.spawn(name, str(AGENTS / "project_probe.py"), args=[json.dumps(steps)], project=project,
                        capabilities=capabilities or ["message", "state_own", "spawn", "kill"])
    results: list[Any] = []
    pending = ""
    for chunk in client.follow_logs(id=info["id"]):
        *lines, pending = (pending + chunk).split("\n")
        for line in lines:
            if line == "done":
                return results
            if line.startswith("step "):
                results.append(json.loads(line.split(" ", 2)[2]))
    raise AssertionError(f"{name} ended before finishing its steps: {results}")


def test_two_projects_run_an_agent_of_the_same_name(kernel) -> None:
    client = kernel.client()
    alpha = client.spawn("runner", SLEEPER, project="alpha")
    beta = client.spawn("runner", SLEEPER, project="beta")
    assert (alpha["project"], beta["project"]) == ("alpha", "beta")
    with pytest.raises(AlreadyExists):
        client.spawn("runner", SLEEPER, project="alpha")
    assert [a["id"] for a in client.list_agents(project="alpha")] == [alpha["id"]]
    loose = client.spawn("loose-runner", SLEEPER)
    assert [a["id"] for a in client.list_agents(project="", status="running")] == [loose["id"]]
    client.kill(id=loose["id"], grace=1)
    assert [a["id"] for a in client.list_agents(name="beta/runner")] == [beta["id"]]
    assert {a["id"] for a in client.list_agents(name="runner")} == {alpha["id"], beta["id"]}

    # A caller of no project: a bare name two teams run is ambiguous, never the newer one.
    with pytest.raises(InvalidArgument, match="alpha, beta"):
        client.kill("runner", grace=1)
    assert client.kill("alpha/runner", grace=1)["id"] == alpha["id"]
    assert client.list_agents(name="beta/runner")[0]["status"] == "running"
    # With only one team's left running, the bare name is that one (as before projects).
    assert client.wait("runner", timeout=0.001, until="ready")["id"] == beta["id"]
    with pytest.raises(NotFound):
        client.kill("gamma/runner")
    client.kill("beta/runner", grace=1)


def test_names_resolve_in_the_callers_project_and_children_stay_in_it(kernel) -> None:
    client = kernel.client()
    client.spawn("worker", SLEEPER, project="beta")
    results = probe(client, "lead", "alpha", [
        ["spawn", "worker", None],       # inherits alpha: beside beta's worker
        ["kill", "worker"],              # its own project's worker, not beta's
        ["spawn", "kid", "alpha"],
        ["spawn", "kid", "beta"],        # may not leave its project
    ])
    assert results == ["alpha", "killed", "alpha", "error permission_denied"]
    assert client.list_agents(name="alpha/worker")[0]["status"] == "killed"
    assert client.list_agents(name="beta/worker")[0]["status"] == "running"
    assert client.list_agents(name="alpha/kid")[0]["parent"] == client.list_agents(name="alpha/lead")[0]["id"]
    for agent in client.list_agents(status="running"):
        client.kill(id=agent["id"], grace=1)


def test_mail_state_and_names_are_the_projects_own(kernel) -> None:
    client = kernel.client()
    alpha = probe(client, "runner", "alpha", [["store", "k", "alpha's"], ["register", "db"],
                                               ["send", "db", "to myself"]])
    assert alpha[1:] == [f"uid:{os.getuid()}/@alpha", f"uid:{os.getuid()}/@alpha/runner"]
    beta = probe(client, "runner", "beta", [["fetch", "k"], ["send", "db", "x"], ["send", "runner", "x"],
                                             ["send", "alpha/runner", "across"]])
    # beta's runner has its own state, does not see alpha's names, and reaches alpha only by PROJECT/NAME.
    assert beta[0] == "error not_found" and beta[1] == "error not_found"
    assert beta[2].endswith("/@beta/runner") and beta[3] == alpha[2]

    # Still running, a project cannot be purged; once ended, its part goes and the other's stays.
    with pytest.raises(Busy):
        client.purge("alpha")
    client.kill("alpha/runner", grace=1)
    removed = client.purge("alpha")
    assert (removed["messages"], removed["keys"]) == (2, 1) and removed["names"] >= 1
    with pytest.raises(NotFound):
        client.fetch("k", agent=alpha[2])
    assert client.purge("alpha")["messages"] == 0
    reply = client._call(Op.SEND, {"to": "beta/runner", "body": "still here"})
    assert reply["to"] == beta[2]
    client.kill("beta/runner", grace=1)
    assert client.purge("beta")["messages"] == 2


def test_an_agent_may_not_purge_even_its_own_project(kernel) -> None:
    client = kernel.client()
    assert probe(client, "wiper", "alpha", [["purge", "alpha"], ["purge", "beta"]]) == [
        "error permission_denied", "error permission_denied"]
    client.kill("alpha/wiper", grace=1)
    for bad in ("Not_A_Project", "-x", "a" * 64, ""):
        with pytest.raises(InvalidArgument, match="project"):
            client.purge(bad)
        with pytest.raises(InvalidArgument, match="project"):
            client.spawn("x", SLEEPER, project=bad)
