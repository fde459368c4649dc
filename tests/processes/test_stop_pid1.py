"""KILL's SIGTERM reaches a sandboxed agent's main process although it is pid 1 of its pid
namespace, which Linux spares every signal it has no handler for: a sandboxed program that does
not handle SIGTERM ends at once (by SIGKILL: its namespace goes with it), one that handles it
still runs its handler, and one that ignores it still waits out its grace period."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from agentos import Client
from agentos.errors import Timeout
from agentos.processes import pid1
from agentos.testing.kernel import KernelProcess

from .conftest import pid_alive

#: Far beyond any test's timeout: a stop that waited for it would fail the test.
FOREVER = 3600


@pytest.fixture(scope="module")
def client(shared_kernel: KernelProcess) -> Iterator[Client]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the full sandbox (a pid namespace)")
    with shared_kernel.client(timeout=120) as c:
        yield c


def _nspid(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1:] for line in f if line.startswith("NSpid:"))


def _await_output(client: Client, agent_id: str, text: str) -> None:
    while text not in client.logs(id=agent_id):
        time.sleep(0.02)


def test_a_sandboxed_program_without_a_handler_ends_at_sigterm(client: Client) -> None:
    info = client.spawn("pid1-sleep", command=["sleep", "86400"], sandboxed=True)
    assert _nspid(info["pid"])[-1] == "1", "the program is pid 1 of its namespace"
    assert pid1.dropped(info["pid"], 15), "Linux would drop its SIGTERM"
    end = client.kill(id=info["id"], grace=FOREVER)
    assert end["status"] == "killed" and end["signal"] == 9
    assert not pid_alive(info["pid"])


def test_a_sandboxed_program_with_a_handler_runs_it(client: Client) -> None:
    script = "trap 'echo caught TERM; exit 7' TERM; echo up; while :; do sleep 0.05; done"
    info = client.spawn("pid1-trap", command=["sh", "-c", script], sandboxed=True)
    _await_output(client, info["id"], "up")  # printed once the trap is set
    assert not pid1.dropped(info["pid"], 15)
    end = client.kill(id=info["id"], grace=FOREVER)
    assert end["exit_code"] == 7 and end["signal"] is None
    assert "caught TERM" in client.logs(id=info["id"])


def test_a_sandboxed_program_that_ignores_sigterm_keeps_its_grace_period(client: Client) -> None:
    script = "trap '' TERM; echo up; exec sleep 86400"
    info = client.spawn("pid1-ignore", command=["sh", "-c", script], sandboxed=True)
    _await_output(client, info["id"], "up")
    assert not pid1.dropped(info["pid"], 15), "an ignored signal is the program's choice"
    client.kill(id=info["id"], grace=FOREVER, wait=False)
    with pytest.raises(Timeout):
        client.wait(id=info["id"], timeout=1)
    assert pid_alive(info["pid"])
    end = client.kill(id=info["id"], grace=0)
    assert end["status"] == "killed" and end["signal"] == 9


def test_an_unsandboxed_program_still_ends_by_sigterm(client: Client) -> None:
    info = client.spawn("pid1-plain", command=["sleep", "86400"], sandboxed=False)
    assert not pid1.dropped(info["pid"], 15), "not a namespace init"
    end = client.kill(id=info["id"], grace=FOREVER)
    assert end["status"] == "killed" and end["signal"] == 15
