"""``agentos up`` and ``agentos down`` as a user runs them: real processes, a real kernel, signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentos import Client
from agentos.manifest import project_name

#: Unsandboxed and without cgroup limits, so the team runs the same on any host.
PLAIN = "sandbox: {enabled: false}\n  limits: {memory: unlimited, cpu: unlimited, pids: unlimited}"

SCRIPTS = {
    "serve.py": """\
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("listening", flush=True)
        while True:
            time.sleep(1)
        """,
    "count.py": """\
        import sys
        for i in range(int(sys.argv[1])):
            print(f"line {i}", flush=True)
        """,
    "brief.py": """\
        print("listening", flush=True)
        """,
    "crash.py": """\
        import sys
        print("crashing", flush=True)
        sys.exit(2)
        """,
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, code in SCRIPTS.items():
        (tmp_path / name).write_text(textwrap.dedent(code))
    return tmp_path


def manifest(project: Path, agents: str, kernel: bool = True) -> Path:
    path = project / "team.yaml"
    head = "kernel: {socket: ./run/k.sock, state_dir: ./run/state}\n" if kernel else ""
    path.write_text(head + "agents:\n" + textwrap.indent(textwrap.dedent(agents).replace("PLAIN", PLAIN), "  "))
    return path


def agentos(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}
    return subprocess.run([sys.executable, "-m", "agentos", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def lines(text: str) -> list[str]:
    # An editable dev install may print its rebuild first; agentos' own lines are the rest.
    return [line for line in text.splitlines() if not line.startswith(("Running cmake", "ninja:", "-- "))]


def assert_kernel_gone(project: Path, output: str) -> None:
    assert not (project / "run" / "k.sock").exists(), output
    assert not (project / "run" / "k.sock.up").exists(), output
    pid = int(output.split("started a kernel (pid ", 1)[1].split(")", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_up_starts_in_dependency_order_and_returns_when_the_team_is_done(project: Path) -> None:
    path = manifest(project, """\
        base:
          script: brief.py
          PLAIN
          readiness: {kind: log-line, pattern: "^listen"}
        job:
          script: count.py
          args: ["3"]
          replicas: 2
          depends_on: [base]
          PLAIN
        """)
    result = agentos("up", path.name, cwd=project)
    out = lines(result.stdout)
    assert result.returncode == 0, result
    assert out[0].startswith("started a kernel (pid ")
    assert out.index("base  | ready") < out.index(next(line for line in out if line.startswith("job-1 | started")))
    for name in ("job-1", "job-2"):
        assert [line for line in out if line.startswith(f"{name} | line")] == [f"{name} | line {i}" for i in range(3)]
        assert f"{name} | exited (code 0)" in out
    assert out[-1] == "every agent has ended"
    assert "Traceback" not in result.stderr
    assert_kernel_gone(project, result.stdout)


def test_restarts_and_failure_are_shown_and_fail_the_run(project: Path) -> None:
    path = manifest(project, """\
        crashy:
          script: crash.py
          PLAIN
          restart: {policy: on-failure, max_restarts: 1, backoff: 10ms}
        """)
    result = agentos("up", path.name, cwd=project)
    out = lines(result.stdout)
    assert result.returncode == 1, result
    assert out.count("crashy | crashing") == 2
    assert out.count("crashy | exited (code 2)") == 2
    assert any(line.startswith("crashy | restarted after 0.01s (pid ") for line in out)
    assert "crashy | failed: ended (failed) after 1 restart(s) within 60s" in out
    assert out[-1] == "every agent has ended; not cleanly: crashy (restarts given up, expected exited)"
    assert_kernel_gone(project, result.stdout)


def test_an_unexpected_crash_fails_the_run_unless_exit_code_from_decides(project: Path) -> None:
    path = manifest(project, """\
        crashy:
          script: crash.py
          PLAIN
        steady:
          script: count.py
          args: ["2"]
          PLAIN
        """)
    result = agentos("up", path.name, cwd=project)
    assert result.returncode == 1, result
    assert lines(result.stdout)[-1] == "every agent has ended; not cleanly: crashy (exit 2, expected exited)"
    chosen = agentos("up", path.name, "--exit-code-from", "crashy", cwd=project)
    assert chosen.returncode == 2, chosen
    assert agentos("up", path.name, "--exit-code-from", "steady", cwd=project).returncode == 0
    unknown = agentos("up", path.name, "--exit-code-from", "nobody", cwd=project)
    assert unknown.returncode == 2
    assert lines(unknown.stderr) == [
        "agentos up: error: --exit-code-from nobody: no such agent in team.yaml (agents: crashy, steady)"]
    assert_kernel_gone(project, unknown.stdout)


def test_an_expected_ending_is_a_clean_run_and_a_missed_one_is_not(project: Path) -> None:
    path = manifest(project, """\
        crashy:
          script: crash.py
          PLAIN
          expect: failed
        steady:
          script: count.py
          args: ["1"]
          PLAIN
          expect: any
        """)
    result = agentos("up", path.name, cwd=project)
    assert result.returncode == 0, result
    assert lines(result.stdout)[-1] == "every agent has ended; as expected: crashy (exit 2)"
    # The same agents, each expected to end another way: both are reported, and the run fails.
    path.write_text(path.read_text().replace("expect: failed", "expect: oom_killed")
                    .replace("expect: any", "expect: failed"))
    missed = agentos("up", path.name, cwd=project)
    assert missed.returncode == 1, missed
    assert lines(missed.stdout)[-1] == ("every agent has ended; not cleanly: crashy (exit 2, expected oom_killed), "
                                        "steady (exit 0, expected failed)")


def test_detached_team_keeps_running_until_down(project: Path) -> None:
    path = manifest(project, """\
        server:
          script: serve.py
          PLAIN
          readiness: {kind: log-line, pattern: listening}
        worker:
          script: serve.py
          PLAIN
          depends_on: [server]
        """)
    up = agentos("up", "-d", path.name, cwd=project)
    assert up.returncode == 0, up
    name = project_name(project.name)
    assert lines(up.stdout)[-1] == (f"2 agent(s) of project {name} up; `agentos ps -p {name}` lists them, "
                                    "`agentos down team.yaml` stops them")
    with Client(project / "run" / "k.sock") as client:
        assert sorted(a["name"] for a in client.list_agents(status="running")) == ["server", "worker"]
    down = agentos("down", path.name, cwd=project)
    assert down.returncode == 0, down
    kernel_pid = up.stdout.split("started a kernel (pid ", 1)[1].split(")", 1)[0]
    assert lines(down.stdout) == ["stopped worker (killed)", "stopped server (killed)",
                                  f"stopped the kernel (pid {kernel_pid})"]
    assert_kernel_gone(project, up.stdout)
    # With nothing left, down says so.
    again = agentos("down", path.name, cwd=project)
    assert (again.returncode, lines(again.stdout)) == (0, [(f"no kernel is running on {project}/run/k.sock: "
                                                          "nothing to stop")])


def test_ctrl_c_stops_the_team_and_the_kernel_it_started(project: Path) -> None:
    path = manifest(project, """\
        server:
          script: serve.py
          PLAIN
          readiness: {kind: log-line, pattern: listening}
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}
    proc = subprocess.Popen([sys.executable, "-m", "agentos", "up", path.name], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line.rstrip("\n"))
            if line.startswith("server | ready"):
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = seen + lines(rest)
    assert proc.returncode == 130, (out, err)
    assert out[-2:] == ["stopping the team", "server | stopped"]
    assert_kernel_gone(project, "\n".join(out))


def test_an_agent_that_never_gets_ready_stops_the_start(project: Path) -> None:
    path = manifest(project, """\
        base:
          script: count.py
          args: ["1"]
          PLAIN
          readiness: {kind: log-line, pattern: never printed}
        later:
          script: serve.py
          PLAIN
          depends_on: [base]
        """)
    result = agentos("up", path.name, cwd=project)
    assert result.returncode == 1, result
    assert lines(result.stderr) == [
        "agentos up: error: base ended before printing a line matching 'never printed'"]
    assert not any(line.startswith("later") for line in lines(result.stdout))
    assert_kernel_gone(project, result.stdout)


def test_invalid_manifest_starts_nothing(project: Path) -> None:
    path = manifest(project, """\
        a: {script: missing.py}
        """)
    result = agentos("up", path.name, cwd=project)
    assert result.returncode == 1
    assert lines(result.stderr) == [
        (f"team.yaml:3:15: error: agents.a.script: missing.py ({project}/missing.py) does not exist "
        "(fix: create it, or fix the path; relative paths start at the manifest's directory)")]
    assert not (project / "run").exists()


def test_up_and_down_on_a_kernel_that_already_runs(kernel, project: Path) -> None:
    path = manifest(project, """\
        server:
          script: serve.py
          PLAIN
        """, kernel=False)
    socket = str(kernel.socket_path)
    up = agentos("up", "-d", "--socket", socket, path.name, cwd=project)
    assert up.returncode == 0, up
    assert not any(line.startswith("started a kernel") for line in lines(up.stdout))
    # up is idempotent: what runs already is left alone.
    again = agentos("up", "-d", "--socket", socket, path.name, cwd=project)
    assert "server | already running" in lines(again.stdout)[0]
    down = agentos("down", "--socket", socket, path.name, cwd=project)
    assert lines(down.stdout) == ["stopped server (killed)"]
    assert kernel.client().list_agents(status="running") == []


def test_the_hello_example_runs_with_the_secure_defaults(kernel, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the default sandbox and cgroup limits")
    example = Path(__file__).resolve().parents[2] / "agents" / "examples" / "hello.yaml"
    result = agentos("up", "--socket", str(kernel.socket_path), str(example), cwd=tmp_path)
    assert result.returncode == 0, result
    out = lines(result.stdout)
    assert any(line.startswith("hello | hello from hello (") and line.endswith(", running on agentos 0.1.0")
               for line in out), out
    assert out[-2:] == ["hello | exited (code 0)", "every agent has ended"]
    [info] = kernel.client().list_agents(name="hello")
    assert info["sandboxed"] and info["limits"] == {"memory": 512 * 2**20, "pids": 128, "cpu": 1.0}


def test_an_expected_oom_kill_a_degraded_host_could_not_give_is_reported_not_failed(
        capsys: pytest.CaptureFixture[str]) -> None:
    from agentos.cli.commands.up import _outcome
    from agentos.cli.team import Member
    from agentos.manifest import AgentSpec

    def hog(status: str, exit_code: int, degraded: tuple[str, ...]) -> Member:
        spec = AgentSpec("hog", script=Path("/hog.py"), expect="oom_killed")
        return Member(spec, "hog", status=status, exit_code=exit_code, final=True, degraded=degraded)

    assert _outcome([hog("exited", 0, ("limits.cpu", "limits.memory"))], None) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "every agent has ended; not verifiable here: hog (exit 0, expected oom_killed; "
        "limits.memory not enforced)")
    # Enforced memory, or a crash, is no excuse: the expectation was checkable and missed.
    assert _outcome([hog("exited", 0, ("limits.cpu",))], None) == 1
    assert _outcome([hog("failed", 3, ("limits.memory",))], None) == 1
