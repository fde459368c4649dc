"""``agentos mail dead PROJECT`` (and DEAD_LETTERS' ``project``): a project's dead letters,
never another project's, though both run an agent of the same name on one kernel."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos import InvalidArgument
from tests.permissions.identities import configured_kernel

POISON_EATER = str(Path(__file__).with_name("agents") / "poison_eater.py")
SECTIONS = {"messaging": {"max_deliveries": 2}}


def mail_dead(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}
    return subprocess.run([sys.executable, "-m", "agentos", "mail", "dead", *args, "--socket", str(socket)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_projects_dead_letters_and_no_other_projects() -> None:
    with configured_kernel(SECTIONS) as kernel:
        client = kernel.client()
        poison = {}
        for project in ("alpha", "beta"):
            client.spawn("runner", POISON_EATER, sandboxed=False, project=project,
                         restart={"policy": "on-failure", "max_restarts": 10, "window": "1h",
                                  "backoff": "10ms", "backoff_max": "10ms"})
            poison[project] = client.send(f"{project}/runner", "poison")
            client.send(f"{project}/runner", "stop")
        deadline = time.monotonic() + 60
        # Each runner dies on its poison twice (max_deliveries), then reads "stop" and exits 0.
        while len(client.dead_letters("*")["dead"]) < 2 or {
                a["project"] for a in client.list_agents(name="runner") if a["exit_code"] == 0} != {"alpha", "beta"}:
            assert time.monotonic() < deadline, client.list_agents(name="runner")
            time.sleep(0.05)

        for project in ("alpha", "beta"):
            [letter] = client.dead_letters("*", project=project)["dead"]
            assert (letter["id"], letter["to"]) == (poison[project], f"uid:0/@{project}/runner")
        assert client.dead_letters("*", project="gamma")["dead"] == []
        assert len(client.dead_letters("*")["dead"]) == 2
        with pytest.raises(InvalidArgument):
            client.dead_letters("*", project="Not A Project")

        by_project = mail_dead(kernel.socket_path, "alpha")
        assert by_project.returncode == 0, by_project
        assert "@alpha/runner" in by_project.stdout and "beta" not in by_project.stdout, by_project.stdout
        with_flag = mail_dead(kernel.socket_path, "-p", "beta")
        assert "@beta/runner" in with_flag.stdout and "alpha" not in with_flag.stdout, with_flag.stdout
        # A name that is no project the kernel knows stays a mailbox, as before.
        as_mailbox = mail_dead(kernel.socket_path, "alpha/runner")
        assert "@alpha/runner" in as_mailbox.stdout and "beta" not in as_mailbox.stdout, as_mailbox.stdout
