"""``agentos spawn -p PROJECT``: one agent into a project, as ``up -p`` starts a team's; ``ps``
shows the project, and the name is unique within it (not across projects)."""
from __future__ import annotations

from agentos.testing.kernel import KernelProcess
from tests.cli.test_up import agentos, lines

#: Unsandboxed and unlimited, so it runs the same on any host.
SLEEPER = ["--no-sandbox", "--memory", "unlimited", "--cpu", "unlimited", "--pids", "unlimited",
           "--command", "sleep", "600"]


def spawn(kernel: KernelProcess, *options: str) -> tuple[int, str, str]:
    done = agentos("spawn", "--socket", str(kernel.socket_path), *options, *SLEEPER,
                   cwd=kernel.root)
    return done.returncode, done.stdout, done.stderr


def test_spawn_into_a_project(kernel: KernelProcess) -> None:
    status, out, err = spawn(kernel, "-p", "alpha", "--name", "worker")
    assert status == 0, err
    assert lines(out)[0].startswith("alpha/worker started: id ")
    status, out, err = spawn(kernel, "--project", "alpha", "--name", "worker")
    assert status == 1 and "already" in err and "alpha" in err, (out, err)
    assert spawn(kernel, "-p", "beta", "--name", "worker")[0] == 0, "another project may have one"
    status, out, err = spawn(kernel, "--name", "worker")
    assert status == 0, err
    assert lines(out)[0].startswith("worker started: id "), "no project: as before"

    ps = agentos("ps", "--socket", str(kernel.socket_path), "--sort", "name", cwd=kernel.root)
    header, *rows = lines(ps.stdout)
    assert header.split()[:2] == ["PROJECT", "NAME"]
    assert sorted(row.split()[:2] for row in rows) == [["-", "worker"], ["alpha", "worker"],
                                                       ["beta", "worker"]]
    only = agentos("ps", "--socket", str(kernel.socket_path), "-p", "alpha", cwd=kernel.root)
    assert [row.split()[:2] for row in lines(only.stdout)[1:]] == [["alpha", "worker"]]
    client = kernel.client()
    assert client.list_agents(name="alpha/worker")[0]["project"] == "alpha"
    for name in ("alpha/worker", "beta/worker", "worker"):
        client.kill(name)


def test_a_bad_project_name_is_refused_before_the_kernel_is_asked(kernel: KernelProcess) -> None:
    status, out, err = spawn(kernel, "-p", "Not_A_Project")
    assert status == 2 and "is not a project name" in err, (out, err)
    assert kernel.client().list_agents() == []
