"""A real ``agentos kernel`` run by a throwaway normal user in a v2 cgroup delegated to it, on this host.

Root plays systemd's ``Delegate=yes``: it makes a cgroup under ``<v2 mount>/agentos/``, hands
the user the directory, ``cgroup.procs``, ``cgroup.subtree_control`` and ``cgroup.threads``,
and moves a shell into it, which becomes the user and execs the kernel (``XDG_RUNTIME_DIR``
unset, as under su, cron or a container). The cgroup is named ``delegated-test-<pid>-<hex>``:
not an instance name (``<pid>-<start time>``), so no kernel's clean-up of dead kernels ever
takes it for one; and nothing outside it is written.

What it covers on a host whose v2 hierarchy offers no controllers (this project's CI machine,
a v1/v2 hybrid: ``/sys/fs/cgroup/unified``): the kernel's choice of the v2 driver rooted in
its delegated cgroup over the v1 hierarchies it may not write, its move of itself and its
zygote into the ``kernel`` leaf, agents' processes in their own leaves below, PAUSE (the
freezer is a core file, no controller needed), KILL of a whole tree (``cgroup.kill``), the
isolation report and ``doctor`` saying the limits are NOT enforced, that nothing remains
once the kernel stops, and that after a ``kill -9`` (guardian included) the next kernel, started
in the leaf as the scope's shell would be, roots itself in the delegated cgroup, removes the dead
kernel's tree and, stopping last, puts the cgroup back as it was. The controllers themselves
(enabling memory, pids and cpu in the delegated cgroup, limits written, partial delegations)
are covered by test_delegated.py on the fake cgroupfs only. On a host whose hierarchy offers
controllers below ``agentos/``, the same test expects those enforced.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.cgroups import KERNEL_LEAF, LEAF, TOP, detect
from agentos.testing.kernel import KernelProcess
from tests.security.conftest import User, _remove_cgroup_tree, module_user
from tests.unprivileged import wrapper

LIMITS = {"memory": "64Mi", "pids": 32, "cpu": 0.5}
_PREFIX = "delegated-test-"
#: A shell moves itself into the delegated cgroup, as systemd-run does for the scope's command.
_ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


@dataclass(frozen=True)
class Delegated:
    user: User
    #: The cgroup directory delegated to the user.
    path: Path
    #: Where the kernel keeps its socket, state and log.
    home: Path

    @property
    def relative(self) -> str:
        """The cgroup as /proc/<pid>/cgroup names it."""
        mount = detect().v2_mount
        assert mount is not None
        return f"/{self.path.relative_to(mount)}"

    def command(self, *argv: str, within: str = "") -> list[str]:
        """``argv`` run as the user, from inside the delegated cgroup (or its cgroup ``within``)."""
        return ["/bin/sh", "-c", _ENTER, str(self.path / within), *wrapper(self.user.uid, self.user.gid), *argv]

    def kernel(self, within: str = "") -> KernelProcess:
        return KernelProcess(self.home, command=self.command(sys.executable, "-m", "agentos", "kernel", within=within),
                             env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "", "OPENAI_API_KEY": ""})


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    yield from module_user("d", "creates a throwaway user and delegates a cgroup to it")


@pytest.fixture
def delegated(user: User) -> Iterator[Delegated]:
    mount = detect().v2_mount
    if mount is None:
        pytest.skip("needs a mounted cgroup v2 hierarchy")
    top = mount / TOP
    _remove_dead_runs(top)
    path = top / f"{_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
    for _ in range(100):
        # A kernel stopping elsewhere removes an empty agentos/ whenever it can: make both again.
        try:
            top.mkdir(exist_ok=True)
            path.mkdir()
            break
        except FileNotFoundError:
            continue
    home = Path(tempfile.mkdtemp(prefix="agentos-delegated-kernel-"))
    try:
        for entry in (path, *(path / name for name in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"))):
            os.chown(entry, user.uid, user.gid)
        home.chmod(0o755)
        os.chown(home, user.uid, user.gid)
        yield Delegated(user, path, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if path.exists():
            _remove_cgroup_tree(path)
        try:
            top.rmdir()
        except OSError:
            pass  # another kernel's, or another test's, still in use


def _remove_dead_runs(top: Path) -> None:
    """Cgroups of earlier runs of this test whose pytest died before its clean-up."""
    if not top.is_dir():
        return
    for entry in top.iterdir():
        pid = entry.name.removeprefix(_PREFIX).split("-")[0]
        if entry.name.startswith(_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_cgroup_tree(entry)


def procs(directory: Path) -> list[int]:
    return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]


def cgroup_of(pid: int) -> str:
    return next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))


def until(check: Any, what: str, limit: float = 60.0) -> None:
    """Poll ``check()`` (the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def doctor(delegated: Delegated, socket: Path) -> dict[str, Any]:
    """``agentos doctor --json``'s cgroups check, as the user in the delegated cgroup."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTOS_SOCKET"}
    result = subprocess.run(delegated.command(sys.executable, "-m", "agentos", "doctor", "--json",
                                              "--socket", str(socket)),
                            env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "cgroups"]
    return check


def offered(delegated: Delegated) -> list[str]:
    """The limits the delegation can enforce: its controllers (none on a hybrid host's v2)."""
    controllers = set((delegated.path / "cgroup.controllers").read_text().split())
    return sorted({"memory", "pids", "cpu"} & controllers)


def assert_as_delegated(delegated: Delegated) -> None:
    """Nothing of agentos left: no cgroup below the delegated one, no process in it."""
    below = [str(p.relative_to(delegated.path)) for p in delegated.path.rglob("*") if p.is_dir()]
    assert below == [] and procs(delegated.path) == []
    assert (delegated.path / "cgroup.subtree_control").read_text().split() == []


def test_a_normal_users_kernel_runs_its_agents_in_its_delegated_cgroup(delegated: Delegated) -> None:
    enforced = offered(delegated)
    kernel = delegated.kernel()
    kernel.start()
    try:
        assert kernel.proc is not None
        with kernel.client(timeout=120) as client:
            pid = client.hello()["pid"]
            # The process started in the delegated cgroup: the kernel or, where `agentos kernel`
            # forks one, its guardian; with the kernel, the zygote and the rest, in the leaf now.
            assert kernel.proc.pid in procs(delegated.path / KERNEL_LEAF)
            run_agents(client, delegated, pid, enforced)
        check = doctor(delegated, kernel.socket_path)
        assert check["delegated"] == str(delegated.path), check
        assert check["detail"].startswith(f"the running kernel (pid {pid}): delegated v2 subtree "
                                          f"at {delegated.path},"), check
        assert check["enforced"] == enforced, check
    finally:
        kernel.stop_checked()
    assert_as_delegated(delegated)


def run_agents(client: Client, delegated: Delegated, kernel_pid: int, enforced: list[str]) -> None:
    cgroups = client.hello()["capabilities"]["processes"]["cgroups"]
    assert cgroups["driver"] == "v2" and cgroups["delegated"] is True, cgroups
    assert cgroups["roots"] == [str(delegated.path)] and cgroups["freezer"] is True, cgroups
    assert cgroups["enforceable"] == enforced, cgroups
    # The kernel left the delegated cgroup for its leaf, its zygote with it: nothing holds the
    # delegated cgroup itself, and everything in the leaf is the user's.
    leaf = delegated.path / KERNEL_LEAF
    assert procs(delegated.path) == []
    assert kernel_pid in procs(leaf) and len(procs(leaf)) >= 2, procs(leaf)
    assert {os.stat(f"/proc/{pid}").st_uid for pid in procs(leaf)} == {delegated.user.uid}
    assert cgroup_of(kernel_pid) == f"{delegated.relative}/{KERNEL_LEAF}"

    agent = client.spawn("tree", command=["/bin/sh", "-c", "sleep 1000 & exec sleep 1001"], limits=LIMITS,
                         allow_degraded=True)
    own = delegated.path / TOP / cgroups["instance"] / agent["id"]
    report = agent["isolation"]["cgroup"]
    assert report["driver"] == "v2" and report["pause"] is True and report["tracks_tree"] is True, report
    assert report["enforced"] == enforced, report
    assert report["not_enforced"] == sorted({"memory", "pids", "cpu"} - set(enforced)), report
    assert [f"limits.{name}" for name in report["not_enforced"]] == \
        [item for item in agent["isolation"]["degraded"] if item.startswith("limits.")], agent["isolation"]
    # The agent and the child it put in the background, in the agent's own leaf under the delegation.
    until(lambda: len(procs(own / LEAF)) >= 2, "the agent's background child never showed")
    assert cgroup_of(agent["pid"]) == f"{delegated.relative}/{TOP}/{cgroups['instance']}/{agent['id']}/{LEAF}"
    tree = procs(own / LEAF)

    client.pause("tree")
    until(lambda: "frozen 1" in (own / LEAF / "cgroup.events").read_text(), "PAUSE never froze the leaf")
    assert [a["status"] for a in client.list_agents(name="tree")] == ["paused"]
    client.resume("tree")
    until(lambda: "frozen 0" in (own / LEAF / "cgroup.events").read_text(), "RESUME never thawed the leaf")

    client.kill("tree")
    ended = client.wait(id=agent["id"], timeout=60)
    assert ended["status"] != "running", ended
    until(lambda: not own.exists(), "the agent's cgroup outlived it")
    assert [pid for pid in tree if os.path.exists(f"/proc/{pid}")] == []


def test_doctor_run_there_without_a_kernel_tries_it_and_leaves_it_as_it_was(delegated: Delegated) -> None:
    check = doctor(delegated, delegated.home / "no-kernel.sock")
    assert check["delegated"] == str(delegated.path), check
    assert check["detail"].startswith(f"a kernel run by uid {delegated.user.uid}: delegated v2 subtree at "
                                      f"{delegated.path},"), check
    assert check["enforced"] == offered(delegated), check
    # The doctor's shell has exited; its trial kernel cgroups and leaf are gone with it.
    assert_as_delegated(delegated)


def test_the_next_kernel_of_the_scope_cleans_what_a_killed_one_left(delegated: Delegated) -> None:
    crashed = delegated.kernel()
    crashed.start()
    with crashed.client(timeout=120) as client:
        dead = client.hello()["capabilities"]["processes"]["cgroups"]["instance"]
        client.spawn("tree", command=["/bin/sh", "-c", "sleep 1000 & exec sleep 1001"], allow_degraded=True,
                     limits=LIMITS)
    crashed.kill_with_guardian()  # nothing cleans up after it
    assert [p.name for p in (delegated.path / TOP / dead).iterdir() if p.is_dir()] != []
    # The scope's processes are in the leaf the killed kernel made: the next kernel starts there,
    # takes the delegated cgroup (the leaf's parent) for its root, and finds the dead kernel's tree.
    kernel = delegated.kernel(within=KERNEL_LEAF)
    kernel.start()
    try:
        with kernel.client(timeout=120) as client:
            cgroups = client.hello()["capabilities"]["processes"]["cgroups"]
            assert cgroups["roots"] == [str(delegated.path)] and cgroups["delegated"] is True, cgroups
            assert sorted(p.name for p in (delegated.path / TOP).iterdir() if p.is_dir()) == [cgroups["instance"]]
    finally:
        kernel.stop_checked()
    # It found the leaf made and undid the arrangement as the last kernel of the scope.
    assert_as_delegated(delegated)
