"""The launch contract: setup failures are errors naming the step, before_exec, fds, exit codes, plain children."""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos.sandbox import Launcher, SandboxError, SandboxSpec
from agentos.sandbox._linux import linux
from tests.sandbox.conftest import ENV, run_agent


def _fails(launcher: Launcher, **spec: object) -> SandboxError:
    spec.setdefault("env", dict(ENV))
    with pytest.raises(SandboxError) as info:
        launcher.launch(SandboxSpec(**spec))  # type: ignore[arg-type]
    return info.value


def test_a_missing_program_is_an_exec_error_not_a_dead_agent(launcher: Launcher) -> None:
    error = _fails(launcher, argv=["/nonexistent/program"])
    assert (error.step, error.errno) == ("exec", errno.ENOENT)
    assert "/nonexistent/program" in error.message


def test_a_missing_bind_source_names_the_mount(launcher: Launcher) -> None:
    error = _fails(launcher, argv=["true"], system_paths=["/usr", "/nonexistent-system-dir"])
    assert (error.step, error.errno) == ("mount /nonexistent-system-dir", errno.ENOENT)


def test_a_script_that_does_not_compile_fails_the_launch(launcher: Launcher, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("def broken(:\n")
    error = _fails(launcher, argv=["broken"], python_script=str(script))
    assert error.step == "compile script" and "SyntaxError" in error.message


@pytest.mark.parametrize("spec, field", [
    ({"argv": []}, "argv"),
    ({"argv": ["true"], "env": {"A=B": "x"}}, "env"),
    ({"argv": ["true"], "pass_fds": {0: 1}}, "pass_fds"),
    ({"argv": ["true"], "stdout_fd": 987654}, "stdout_fd"),
    ({"argv": ["true"], "workdir": "relative/dir"}, "workdir"),
    ({"argv": ["true"], "hostname": "x" * 65}, "hostname"),
    ({"argv": ["true"], "sandboxed": False, "hostname": "h"}, "hostname"),
])
def test_bad_specs_are_refused_before_any_fork(launcher: Launcher, spec: dict[str, object], field: str) -> None:
    error = _fails(launcher, **spec)
    assert error.step == "spec" and field in error.message


def test_before_exec_runs_with_the_pid_before_the_agent_starts(launcher: Launcher, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    seen = []

    def before_exec(pid: int) -> None:
        assert not marker.exists()  # the agent has not run yet
        with open(f"/proc/{pid}/status") as f:
            seen.append(next(line for line in f if line.startswith("NSpid")).split())

    result = run_agent(launcher, tmp_path, argv=["sh", "-c", f"touch {marker}"], workdir=str(tmp_path),
                       before_exec=before_exec)
    assert result.returncode == 0 and marker.exists()
    assert seen and seen[0][-1] == "1"  # NSpid: <host pid> 1 -- it is pid 1 inside


def test_a_failing_before_exec_aborts_the_launch_and_leaves_nothing(launcher: Launcher, tmp_path: Path) -> None:
    marker = tmp_path / "started"

    def before_exec(pid: int) -> None:
        raise RuntimeError("no cgroup for you")

    with pytest.raises(RuntimeError, match="no cgroup"):
        launcher.launch(SandboxSpec(argv=["sh", "-c", f"touch {marker}"], env=dict(ENV), workdir=str(tmp_path),
                                    before_exec=before_exec))
    assert not marker.exists()


SHOW_FDS = "echo via-7 >&7; echo out; echo err >&2; ls /proc/self/fd | sort -n | tr '\\n' ' '"


def test_pass_fds_and_stdio_reach_their_numbers(launcher: Launcher, tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = run_agent(launcher, tmp_path, argv=["sh", "-c", SHOW_FDS],
                           pass_fds={theirs.fileno(): 7})
        assert ours.recv(100) == b"via-7\n"
    assert result.stdout.startswith("out\n") and result.stderr == "err\n"
    # 0, 1, 2, 7 and the fd ls itself opens: nothing of the kernel or the zygote leaks in.
    assert result.stdout.split("\n", 1)[1].split() == ["0", "1", "2", "3", "7"]


def test_a_writable_file_is_writable_and_its_directory_is_not(launcher: Launcher, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    log = shared / "agent.log"
    log.write_text("")
    result = run_agent(launcher, tmp_path, writable_paths=[str(log)], argv=[
        "sh", "-c", f"echo written >> {log} && (touch {shared}/other; true)"])
    assert result.returncode == 0 and log.read_text() == "written\n"
    # The file's directory is not bound: it is a mount point in the agent's private /tmp
    # (root's, so the agent cannot even create "other" there), never the host's.
    assert not (shared / "other").exists()


def test_zygote_agents_get_exactly_the_specs_env_and_argv(launcher: Launcher, tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text("import os, sys, json; print(json.dumps([dict(os.environ), sys.argv, __name__]))")
    result = run_agent(launcher, tmp_path, script=str(script), argv=["one", "two"], env={"ONLY": "this"})
    env, argv, name = result.json()
    assert env == {"ONLY": "this"}
    assert argv == [str(script), "one", "two"]
    assert name == "__main__"


@pytest.mark.parametrize("body, code", [
    ("import sys; sys.exit(3)", 3),
    ("raise SystemExit", 0),
    ("raise ValueError('boom')", 1),
    ("import atexit; atexit.register(lambda: print('atexit ran'))", 0),
])
def test_zygote_agents_exit_like_python(launcher: Launcher, tmp_path: Path, body: str, code: int) -> None:
    script = tmp_path / "exits.py"
    script.write_text(body + "\n")
    result = run_agent(launcher, tmp_path, script=str(script))
    assert result.returncode == code
    if "ValueError" in body:
        assert "ValueError: boom" in result.stderr
    if "atexit" in body:
        assert result.stdout == "atexit ran\n"


def test_sigterm_stops_a_zygote_agent_although_it_is_pid_1(launcher: Launcher, tmp_path: Path) -> None:
    script = tmp_path / "waits.py"
    script.write_text("import os, signal\nos.write(3, b'up')\nsignal.pause()\n")
    r, w = os.pipe()
    launched = launcher.launch(SandboxSpec(argv=["waits"], python_script=str(script), pass_fds={w: 3}))
    os.close(w)
    try:
        assert os.read(r, 2) == b"up"
        launched.send_signal(signal.SIGTERM)
        assert launched.wait() == 128 + signal.SIGTERM
    finally:
        os.close(r)
        launched.close()


def test_an_unsandboxed_child_is_plain_but_in_its_own_session(launcher: Launcher, tmp_path: Path) -> None:
    result = run_agent(launcher, tmp_path, sandboxed=False, argv=[
        "sh", "-c", "echo $$ $(cut -d' ' -f6 /proc/$$/stat) $(hostname); grep NoNewPrivs /proc/$$/status"])
    pid, session, hostname, _, nnp = result.stdout.split()
    assert pid == session and pid != "1"
    assert hostname == socket.gethostname()
    assert nnp == "0"
    assert result.isolation["sandboxed"] is False and result.isolation["namespaces"] == []


def test_agents_are_children_of_the_launching_process(launcher: Launcher) -> None:
    launched = launcher.launch(SandboxSpec(argv=["sleep", "1000"], env=dict(ENV)))
    try:
        with open(f"/proc/{launched.pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
        assert launched.poll() is None
        launched.send_signal(signal.SIGKILL)
        assert launched.wait() == -signal.SIGKILL
    finally:
        launched.close()


def test_a_dead_zygote_is_replaced_on_the_next_launch(tmp_path: Path) -> None:
    with Launcher() as own:
        first = own.zygote_pid
        assert first is not None
        pidfd = linux.pidfd_open(first)
        linux.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [])  # readable once it has exited
        os.close(pidfd)
        result = run_agent(own, tmp_path, argv=["true"])
        assert result.returncode == 0
        assert own.zygote_pid not in (None, first)


def test_agents_die_when_their_kernel_dies(tmp_path: Path) -> None:
    """A stand-in kernel starts a launcher and an agent and is SIGKILLed: everything it started follows."""
    script = tmp_path / "kernel.py"
    script.write_text(
        "import os, time\n"
        "from agentos.sandbox import Launcher, SandboxSpec\n"
        "launcher = Launcher()\n"
        "launcher.start()\n"
        "agent = launcher.launch(SandboxSpec(argv=['sleep', '1000'], env={'PATH': '/usr/bin:/bin'}))\n"
        # Once the zygote is idle: the child it forks ahead after a launch exists by then, and
        # is among the orphans reaped below (under load it came later, a zombie of this test).
        "launcher.embryo_pids\n"
        "print(agent.pid, flush=True)\n"
        "time.sleep(1000)\n")
    before = _children()
    # As a subreaper, this test inherits the orphans and can reap them instead of init.
    linux.set_child_subreaper(True)
    try:
        kernel = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
        assert kernel.stdout is not None
        agent = int(kernel.stdout.readline())
        orphans = _descendants(kernel.pid)  # the zygote, the agent, a child forked ahead of time
        assert agent in orphans
        kernel.kill()
        kernel.wait()
        kernel.stdout.close()
        statuses = _reap(orphans)
    finally:
        linux.set_child_subreaper(False)
    assert statuses[agent] == (os.CLD_KILLED, signal.SIGKILL)
    # The zygote may see its socket close before the signal lands; nothing survives either way.
    assert all(status in ((os.CLD_KILLED, signal.SIGKILL), (os.CLD_EXITED, 0)) for status in statuses.values())
    assert _children() <= before


def _children() -> set[int]:
    return {pid for pid, parent in _parents().items() if parent == os.getpid()}


def _descendants(root: int) -> set[int]:
    parents, found = _parents(), {root}
    while grown := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= grown
    return found - {root}


def _parents() -> dict[int, int]:
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return parents


def _reap(pids: set[int]) -> dict[int, tuple[int, int]]:
    """Wait for each (now our child) to exit; SIGKILL any still alive after 30 s (a liveness guard)."""
    pidfds = {pid: linux.pidfd_open(pid) for pid in pids}
    try:
        deadline, pending = time.monotonic() + 30, set(pidfds.values())
        while pending and time.monotonic() < deadline:
            pending -= set(select.select(list(pending), [], [], deadline - time.monotonic())[0])
        for fd in pending:
            linux.pidfd_send_signal(fd, signal.SIGKILL)
        statuses = {}
        for pid, fd in pidfds.items():
            result = os.waitid(os.P_PIDFD, fd, os.WEXITED)
            assert result is not None
            statuses[pid] = (result.si_code, result.si_status)
        assert not pending, "a process outlived its kernel"
        return statuses
    finally:
        for fd in pidfds.values():
            os.close(fd)


def test_a_zygote_agent_asking_for_unbuffered_output_gets_it(launcher: Launcher, tmp_path: Path) -> None:
    # The zygote starts with the base environment only: PYTHONUNBUFFERED in the agent's env
    # must still act, or stdout lines would reach a shared log after stderr's.
    script = tmp_path / "interleave.py"
    script.write_text("import sys\nprint('out 1')\nprint('err', file=sys.stderr)\nprint('out 2')\n"
                      "sys.stdout.write('no newline')\nimport os\nos._exit(0)\n")
    log = tmp_path / "log"
    with open(log, "w") as f:
        launched = launcher.launch(SandboxSpec(argv=["x"], python_script=str(script), stdout_fd=f.fileno(),
                                               stderr_fd=f.fileno(), env={**ENV, "PYTHONUNBUFFERED": "1"}))
    try:
        assert launched.wait() == 0
    finally:
        launched.close()
    assert log.read_text() == "out 1\nerr\nout 2\nno newline"
