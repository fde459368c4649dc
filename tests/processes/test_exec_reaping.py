"""What an exec'd command orphans is reaped by the exec's own subreaper (sandbox/subreaper.py),
never left as a zombie under an agent whose pid 1 does not reap, and nothing of its tree
(double-forked or setsid'd) outlives the exec. Against a real kernel, for a sandboxed agent
whose main program is a Python script that only sleeps (pid 1 of its namespace, never waits)
and for an unsandboxed one; processes are found from the host by command lines unique to
the test."""
from __future__ import annotations

import functools
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.testing.kernel import KernelProcess

from .conftest import agent, require_cgroup_limits

#: Bounds a broken run only: what is awaited happens asynchronously, never a speed requirement.
DEADLINE = 60.0
_counter = itertools.count(1)


@pytest.fixture(scope="module")
def kernel(shared_kernel: KernelProcess) -> Iterator[Client]:
    with shared_kernel.client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module", params=[True, False], ids=["sandboxed", "plain"])
def sleeper(request: pytest.FixtureRequest, kernel: Client) -> Iterator[dict[str, Any]]:
    """An agent whose main program is a Python script that sleeps and never waits for a child."""
    if request.param and os.geteuid() != 0:
        pytest.skip("needs root: the full sandbox")
    name = f"reap-{'s' if request.param else 'p'}"
    info = kernel.spawn(name, agent("sleeper"), sandboxed=request.param, limits={"pids": 64})
    try:
        if request.param:
            assert _nspid(info["pid"]) == 1, "a sandboxed agent is pid 1 of its namespace"
        yield info
    finally:
        kernel.kill(id=info["id"], grace=0)


def _marker() -> str:
    """A sleep duration no other process on the host has: its command line names our processes."""
    return f"{40000 + next(_counter)}.{secrets.randbelow(10 ** 6):06d}"


def test_short_lived_orphans_are_reaped_and_long_lived_ones_end_with_the_exec(
        kernel: Client, sleeper: dict[str, Any]) -> None:
    m = _marker()
    command = (f"(sleep {m}1 &); (sleep 0.1 &); (sleep 0.1 &); (sh -c 'sleep 0.2 &' &); "
               f"setsid sleep {m}2 & exec sleep {m}3")
    handle = kernel.exec_start(sleeper["name"], command)
    orphan, daemon, main = (_await(functools.partial(_find, f"{m}{i}"), f"sleep {m}{i}")[0]
                                for i in (1, 2, 3))
    subreaper = _ppid(main)
    # Orphans go to the exec's subreaper (a child of the kernel), not to the agent's pid 1.
    assert _ppid(orphan) == subreaper != sleeper["pid"]
    assert _ppid(subreaper) == _ppid(sleeper["pid"])  # the kernel's child, as the agent is
    assert _ppid(daemon) == main  # its parent lives: it is not an orphan yet
    # The double-forked short sleeps have ended by now, and were reaped as they did.
    _await(lambda: not _zombies(sleeper, subreaper) and _sleeps_under(subreaper) == sorted([orphan, main]),
           "the short-lived orphans reaped")
    signalled = kernel.exec_signal(handle["id"], "TERM", group=False)  # the command alone
    assert signalled["delivered"]
    result = kernel.exec_wait(handle["id"])
    assert result.signal == 15 and not result.timed_out
    # Its end took the whole tree with it: the orphan and the setsid'd daemon too.
    _await(lambda: not _find(m), f"nothing left running sleep {m}*")
    _await(lambda: not _zombies(sleeper, subreaper), "no zombie left in the agent")


def test_a_timeout_kills_the_whole_tree(kernel: Client, sleeper: dict[str, Any]) -> None:
    m = _marker()
    result = kernel.exec(sleeper["name"], f"setsid sleep {m}1 & (sleep {m}2 &); sleep {m}3", timeout=0.5)
    assert result.timed_out and result.signal == 9 and result.exit_code is None
    _await(lambda: not _find(m), f"nothing left running sleep {m}*")
    assert not _zombies(sleeper, None)


def test_daemons_do_not_outlive_the_command(kernel: Client, sleeper: dict[str, Any]) -> None:
    m = _marker()
    result = kernel.exec(sleeper["name"], f"setsid sleep {m}1 & (sleep {m}2 &); echo started")
    assert (result.stdout, result.exit_code) == (b"started\n", 0)
    _await(lambda: not _find(m), f"nothing left running sleep {m}*")
    assert not _zombies(sleeper, None)


def test_the_exec_ends_as_its_command_and_group_signals_reach_the_command(
        kernel: Client, sleeper: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    assert kernel.exec(sleeper["name"], "exit 7").exit_code == 7
    assert kernel.exec(sleeper["name"], "kill -USR1 $$").signal == 10
    # The subreaper leads the group and ignores what is sent to it: the command decides.
    ready = f"/tmp/agentos-reap-{secrets.token_hex(4)}"
    for group, sig, code in ((True, "TERM", 3), (False, "INT", 4)):
        handle = kernel.exec_start(sleeper["name"], f"trap 'exit {code}' {sig}; : > {ready}; "
                                                    "while :; do sleep 0.05; done")
        _await(lambda: kernel.exec(sleeper["name"], ["/bin/test", "-e", ready]).exit_code == 0, "the trap set")
        assert kernel.exec_signal(handle["id"], sig, group=group)["delivered"]
        result = kernel.exec_wait(handle["id"])
        assert (result.exit_code, result.signal) == (code, None)
        kernel.exec(sleeper["name"], ["/bin/rm", "-f", ready])


def test_at_its_pids_limit_an_exec_still_runs_without_a_subreaper(kernel: Client) -> None:
    require_cgroup_limits()
    info = kernel.spawn("reap-full", agent("sleeper"), sandboxed=True, limits={"pids": 12})
    try:
        # The agent, this exec's subreaper and its command, and 9 sleeps: 12.
        filler = kernel.exec_start(info["name"], "for i in 1 2 3 4 5 6 7 8 9; do sleep 100000 & done; "
                                                 "exec sleep 100000")
        _await(lambda: _pids_current(info["pid"]) == 12, "the pids limit reached")
        # No pid left for a subreaper: the command runs as the exec's process itself.
        assert _parent_in_view(kernel, info) == 0  # the kernel, outside the agent's namespace
        kernel.exec_signal(filler["id"], "KILL")
        assert kernel.exec_wait(filler["id"]).signal == 9
        _await(lambda: _pids_current(info["pid"]) == 1, "the filler's tree gone")
        assert _parent_in_view(kernel, info) > 1  # its subreaper again
    finally:
        kernel.kill(id=info["id"], grace=0)


def _parent_in_view(kernel: Client, info: dict[str, Any]) -> int:
    """The parent pid, in the agent's view, of a command exec'd into it."""
    result = kernel.exec(info["name"], ["/bin/cat", "/proc/self/stat"])
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.decode().rsplit(")", 1)[1].split()[1])


# --- the host's view -----------------------------------------------------------------------

def _await(probe, what: str):
    deadline = time.monotonic() + DEADLINE
    while not (result := probe()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)
    return result


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else -1


def _find(marker: str) -> list[int]:
    """Live ``sleep`` processes whose duration starts with ``marker``, in pid order (the
    shells that start them name it too, but are no sleep)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = _stat(int(entry))
            if argv[:1] == [b"sleep"] and argv[1].startswith(marker.encode()) and fields and fields[0] != "Z":
                found.append(int(entry))
    return sorted(found)


def _children(pid: int) -> list[int]:
    try:
        return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return []


def _sleeps_under(pid: int) -> list[int]:
    def is_sleep(child: int) -> bool:
        try:
            return Path(f"/proc/{child}/comm").read_text().strip() == "sleep"
        except OSError:
            return False
    return [child for child in _children(pid) if is_sleep(child)]


def _zombies(sleeper: dict[str, Any], subreaper: int | None) -> list[int]:
    """Zombies in the agent: in its pid namespace (sandboxed), or the agent's and the
    subreaper's unreaped children (unsandboxed: the host's namespace holds everyone's)."""
    if sleeper["sandboxed"]:
        namespace = os.readlink(f"/proc/{sleeper['pid']}/ns/pid")
        candidates = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                        candidates.append(int(entry))
                except OSError:
                    continue
    else:
        candidates = _children(sleeper["pid"]) + (_children(subreaper) if subreaper else [])
    return [pid for pid in candidates if (_stat(pid) or [""])[0] == "Z"]


def _nspid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid")


def _pids_current(pid: int) -> int:
    """Tasks counted against the agent's ``pids`` limit (in the cgroup that sets it)."""
    v1 = v2 = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = Path(f"/sys/fs/cgroup{path}")
        elif "pids" in controllers.split(","):
            v1 = Path(f"/sys/fs/cgroup/pids{path}")
    directory = v1 or v2
    assert directory is not None, "no pids cgroup"
    while (directory / "pids.max").read_text().strip() == "max":
        directory = directory.parent
    return int((directory / "pids.current").read_text())
