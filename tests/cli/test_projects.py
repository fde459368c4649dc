"""Teams are projects, as in compose: two manifests each run an agent named ``runner`` at once,
``down`` of one leaves the other (and the kernel) running, ``up`` refuses an agent of its project
that runs another spec unless ``--force-recreate``, and ``down --volumes`` or ``purge`` wipe a
project's mail, state and names."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentos import Client, NotFound
from agentos.manifest import ManifestError, loads, project_name
from agentos.protocol import Op
from tests.cli.test_up import PLAIN, agentos, lines

SERVE = """\
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("{word}", flush=True)
    while True:
        time.sleep(1)
    """


def team(directory: Path, word: str, head: str = "", env: str = "") -> Path:
    """A manifest in ``directory`` with one agent ``runner`` printing ``word``; the kernel's socket
    is shared by every team under the same parent."""
    directory.mkdir(exist_ok=True)
    (directory / f"{word}.py").write_text(textwrap.dedent(SERVE.format(word=word)))
    path = directory / "team.yaml"
    path.write_text(head + "kernel: {socket: ../run/k.sock, state_dir: ../run/state}\nagents:\n  runner:\n"
                    f"    script: {word}.py\n    {PLAIN.replace(chr(10), chr(10) + '  ')}\n"
                    f"    readiness: {{kind: log-line, pattern: {word}}}\n" + env)
    return path


def running(socket: Path) -> dict[str, dict[str, Any]]:
    with Client(socket) as client:
        return {f"{a['project']}/{a['name']}": a for a in client.list_agents(status="running")}


def test_two_teams_with_an_agent_of_the_same_name_run_at_once(tmp_path: Path) -> None:
    one, two = team(tmp_path / "one", "first"), team(tmp_path / "Team Two", "second")
    socket = tmp_path / "run" / "k.sock"
    up = agentos("up", "-d", str(one), cwd=tmp_path)
    assert up.returncode == 0, up
    kernel_pid = up.stdout.split("started a kernel (pid ", 1)[1].split(")", 1)[0]
    assert lines(up.stdout)[-1].startswith("1 agent(s) of project one up")
    up2 = agentos("up", "-d", str(two), cwd=tmp_path)
    assert up2.returncode == 0, up2
    assert "already running" not in up2.stdout and "started a kernel" not in up2.stdout
    agents = running(socket)
    assert sorted(agents) == ["one/runner", "team-two/runner"]
    assert agents["one/runner"]["argv"] != agents["team-two/runner"]["argv"]

    ps = agentos("ps", "--socket", str(socket), cwd=tmp_path)
    header, *rows = lines(ps.stdout)
    assert header.split()[:2] == ["PROJECT", "NAME"]
    assert sorted(r.split()[:2] for r in rows) == [["one", "runner"], ["team-two", "runner"]]
    only = agentos("ps", "--socket", str(socket), "-p", "team-two", cwd=tmp_path)
    assert [r.split()[:2] for r in lines(only.stdout)[1:]] == [["team-two", "runner"]]
    # One team's logs by name, the other's by PROJECT/NAME.
    with Client(socket) as client:
        assert "second" in client.logs("team-two/runner")
        assert "first" in client.logs("one/runner")

    down = agentos("down", str(one), cwd=tmp_path)
    assert down.returncode == 0, down
    assert lines(down.stdout) == ["stopped runner (killed)",
                                  f"kernel left running (pid {kernel_pid}): 1 agent of project team-two"]
    assert sorted(running(socket)) == ["team-two/runner"]

    down2 = agentos("down", str(two), cwd=tmp_path)
    # (A last line may report cgroups of other kernels that died on this host: not this test's.)
    assert lines(down2.stdout)[:2] == ["stopped runner (killed)", f"stopped the kernel (pid {kernel_pid})"]
    assert not socket.exists()


def test_up_refuses_a_changed_agent_of_its_project_unless_told_to_recreate(tmp_path: Path) -> None:
    first = team(tmp_path / "app", "first", env="    env: {TOKEN: s3cret-one}\n")
    socket = tmp_path / "run" / "k.sock"
    assert agentos("up", "-d", str(first), cwd=tmp_path).returncode == 0
    before = running(socket)["app/runner"]

    # Another manifest of the same project (name: app) with another script and env value.
    changed = team(tmp_path / "other", "second", head="name: app\n", env="    env: {TOKEN: s3cret-two}\n")
    refused = agentos("up", "-d", str(changed), cwd=tmp_path)
    assert refused.returncode == 1, refused
    assert "app/runner already runs with another spec" in refused.stderr
    assert "script: " in refused.stderr and "second.py" in refused.stderr
    assert "env TOKEN (value differs)" in refused.stderr and "s3cret" not in refused.stderr
    assert running(socket)["app/runner"]["id"] == before["id"]

    recreated = agentos("up", "-d", "--force-recreate", str(changed), cwd=tmp_path)
    assert recreated.returncode == 0, recreated
    assert "runner | recreated: its spec changed" in recreated.stdout
    after = running(socket)["app/runner"]
    assert after["id"] != before["id"] and str(after["argv"][0]).endswith("second.py")

    same = agentos("up", "-d", str(changed), cwd=tmp_path)
    assert "runner | already running" in same.stdout and running(socket)["app/runner"]["id"] == after["id"]

    # -p overrides the manifest's name: the same file runs again as another project.
    again = agentos("up", "-d", "-p", "app-copy", str(changed), cwd=tmp_path)
    assert again.returncode == 0, again
    assert sorted(running(socket)) == ["app-copy/runner", "app/runner"]
    assert agentos("down", "-p", "app-copy", str(changed), cwd=tmp_path).returncode == 0
    down = agentos("down", str(changed), cwd=tmp_path)
    assert "stopped the kernel" in down.stdout


def test_down_volumes_and_purge_wipe_a_projects_data(tmp_path: Path) -> None:
    path = team(tmp_path / "keep", "first")
    other = team(tmp_path / "wipe", "second")
    socket = tmp_path / "run" / "k.sock"
    assert agentos("up", "-d", str(path), cwd=tmp_path).returncode == 0
    assert agentos("up", "-d", str(other), cwd=tmp_path).returncode == 0
    with Client(socket) as client:
        keep, wipe = running(socket)["keep/runner"], running(socket)["wipe/runner"]
        principals = {}
        for project in ("keep", "wipe"):
            principals[project] = client._call(Op.SEND, {"to": f"{project}/runner", "body": "hi"})["to"]
            client.store("k", project, agent=principals[project])
        assert principals["keep"] != principals["wipe"] and keep["id"] != wipe["id"]

    down = agentos("down", "--volumes", str(other), cwd=tmp_path)
    assert down.returncode == 0, down
    assert "removed project wipe's data: 1 messages, 0 dead letters, 0 names, 1 keys" in down.stdout
    assert "kernel left running" in down.stdout
    with Client(socket) as client:
        assert client.fetch("k", agent=principals["keep"]) == "keep"
        with pytest.raises(NotFound):
            client.fetch("k", agent=principals["wipe"])
    # purge of a running project is refused; once down, it goes.
    busy = agentos("purge", "--socket", str(socket), "keep", cwd=tmp_path)
    assert busy.returncode == 1 and "still runs runner" in busy.stderr
    assert agentos("down", str(path), cwd=tmp_path).returncode == 0
    assert not socket.exists()


def test_project_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    with pytest.raises(ManifestError, match=r"team.yaml:1:7: error: name: 'Bad_Name' is not a valid project name"):
        loads("name: Bad_Name\nagents: {a: {script: a.py}}\n", tmp_path / "team.yaml")
    assert loads("agents: {a: {script: a.py}}\n", tmp_path / "team.yaml").project == project_name(tmp_path.name)
    assert [project_name(n) for n in ("My Team", "__x__", "!!!", "A" * 80)] == ["my-team", "x", "default", "a" * 63]
    usage = agentos("up", "-p", "Nope!", "team.yaml", cwd=tmp_path)
    assert usage.returncode == 2 and "'Nope!' is not a project name" in usage.stderr


def test_a_foreground_up_leaves_its_kernel_to_the_teams_still_on_it(tmp_path: Path) -> None:
    one, go = tmp_path / "one", tmp_path / "go"
    one.mkdir()
    (one / "until.py").write_text(textwrap.dedent(f"""\
        import os, time
        print("waiting", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
        """))
    (one / "team.yaml").write_text("kernel: {socket: ../run/k.sock, state_dir: ../run/state}\nagents:\n"
                                   f"  runner:\n    script: until.py\n    {PLAIN.replace(chr(10), chr(10) + '  ')}\n")
    two = team(tmp_path / "two", "second")
    socket = tmp_path / "run" / "k.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}
    first = subprocess.Popen([sys.executable, "-m", "agentos", "up", str(one / "team.yaml")], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:  # type: ignore[union-attr]
            if "runner | waiting" in line:
                break
        assert agentos("up", "-d", str(two), cwd=tmp_path).returncode == 0
        go.touch()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        kernel_line = [line for line in lines(out) if line.startswith("kernel left running")]
        assert kernel_line and kernel_line[0].endswith(": 1 agent of project two"), out
        assert sorted(running(socket)) == ["two/runner"]
        down = agentos("down", str(two), cwd=tmp_path)
        assert "stopped the kernel" in down.stdout and not socket.exists()
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
            first.communicate()
        if socket.exists():  # a failed run: stop the kernel it started, whatever it was left doing
            with Client(socket) as client:
                pid = client.hello()["pid"]
            os.kill(pid, signal.SIGTERM)
