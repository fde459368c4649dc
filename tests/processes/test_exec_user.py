"""EXEC's ``user``: an exec runs as its agent's user or as ``nobody``, never as anyone who holds
more. Against a real root kernel (sandboxed and unsandboxed agents) and a rootless one run by
a throwaway user; checked from inside (``id``, ``/proc/self/status``, the agent's private
files) and from the host."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.errors import InvalidArgument, PermissionDenied
from agentos.protocol import Op
from agentos.testing.kernel import KernelProcess
from tests.processes.test_exec import cgroup_procs
from tests.security.conftest import User, _remove_stale_users, throwaway_user
from tests.unprivileged import wrapper

AGENT_UID = 65533
NOBODY = 65534
#: Every capability set, as /proc/<pid>/status names them.
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


@pytest.fixture(scope="module")
def kernel(shared_kernel: KernelProcess) -> Iterator[Client]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a root kernel's agents and their uids")
    with shared_kernel.client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def box(kernel: Client) -> Iterator[dict[str, Any]]:
    """A sandboxed agent holding private files of its own: a 0700 directory and a 0600 file."""
    agent = kernel.spawn("user-box", command=["/bin/sleep", "100000"], sandboxed=True, limits={"pids": 64})
    try:
        made = kernel.exec(agent["name"], "umask 077; mkdir /tmp/mine && echo secret > /tmp/mine/s "
                                          "&& echo private > /tmp/p && ls -ld /tmp/mine /tmp/p")
        assert made.exit_code == 0, made.stderr
        yield agent
    finally:
        kernel.kill(id=agent["id"], grace=0)


@pytest.fixture(scope="module")
def plain(kernel: Client) -> Iterator[dict[str, Any]]:
    """An unsandboxed agent of the root kernel: it runs as root."""
    agent = kernel.spawn("user-plain", command=["/bin/sleep", "100000"], sandboxed=False)
    try:
        yield agent
    finally:
        kernel.kill(id=agent["id"], grace=0)


def _status(text: str) -> dict[str, str]:
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in text.splitlines() if ":" in line}


def test_by_default_and_by_its_own_uid_an_exec_is_the_agent(kernel: Client, box: dict[str, Any]) -> None:
    for user in (None, AGENT_UID, str(AGENT_UID)):
        result = kernel.exec(box["name"], "id -u; id -g", user=user)
        assert result.stdout == b"65533\n65533\n" and result.info["user"] == AGENT_UID


def test_nobody_is_uid_65534_and_holds_no_capability(kernel: Client, box: dict[str, Any]) -> None:
    for user in ("nobody", NOBODY, str(NOBODY)):
        result = kernel.exec(box["name"], "id -u; id -g; id -G; cat /proc/self/status", user=user)
        uid, gid, groups, *status_lines = result.stdout.decode().splitlines()
        assert (uid, gid, groups) == ("65534", "65534", "65534"), result.stderr
        status = _status("\n".join(status_lines))
        assert status["Uid"].split() == status["Gid"].split() == ["65534"] * 4
        assert {name: status[name] for name in CAP_SETS} == dict.fromkeys(CAP_SETS, "0000000000000000")
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        assert result.info["user"] == NOBODY
    assert [ex["user"] for ex in kernel.exec_list(box["name"])][-3:] == [NOBODY] * 3


def test_nobody_is_seen_so_from_the_host_in_the_agents_namespaces(kernel: Client, box: dict[str, Any]) -> None:
    handle = kernel.exec_start(box["name"], ["/bin/sleep", "100000"], user="nobody")
    try:
        mine = [pid for pid in cgroup_procs(box["pid"]) if _uid(pid) == NOBODY]
        assert mine, "no process of uid 65534 in the agent's cgroup"
        for pid in mine:
            assert _namespaces(pid) == _namespaces(box["pid"])
    finally:
        kernel.exec_signal(handle["id"], "KILL")
        assert kernel.exec_wait(handle["id"]).signal == 9


def test_nobody_cannot_reach_what_the_agent_keeps_to_itself(kernel: Client, box: dict[str, Any]) -> None:
    attempts = {
        "read the 0600 file": "cat /tmp/p",
        "list the 0700 directory": "ls /tmp/mine",
        "read inside it": "cat /tmp/mine/s",
        "write into it": "echo x > /tmp/mine/new",
        "signal the agent": "kill -0 1",
        "read the agent's environment": "cat /proc/1/environ",
    }
    for what, command in attempts.items():
        result = kernel.exec(box["name"], command, user="nobody")
        assert result.exit_code != 0, f"nobody could {what}: {result.stdout!r}"
        assert b"ermission denied" in result.stderr or b"not permitted" in result.stderr, (what, result.stderr)
    # The agent still can; and it cannot signal nobody's process either (no uid holds the other's).
    assert kernel.exec(box["name"], "cat /tmp/mine/s").stdout == b"secret\n"
    handle = kernel.exec_start(box["name"], ["/bin/sleep", "100000"], user="nobody")
    try:
        probe = kernel.exec(box["name"], f"kill -0 {handle['pid']}")
        assert probe.exit_code != 0 and b"not permitted" in probe.stderr
    finally:
        kernel.exec_signal(handle["id"], "KILL")
        kernel.exec_wait(handle["id"])


def _another_host_user() -> str:
    """A real host account that is neither root, the agents' uid nor nobody."""
    return next(entry.pw_name for entry in pwd.getpwall() if entry.pw_uid not in (0, AGENT_UID, NOBODY))


@pytest.mark.parametrize("user", ["root", 0, "0", 1000, "1000", 4294967294, "another", "no-such-user"])
def test_anyone_more_privileged_is_refused(kernel: Client, box: dict[str, Any], user: Any) -> None:
    if user == "another":
        user = _another_host_user()
    before = len(kernel.exec_list(box["name"]))
    with pytest.raises(PermissionDenied) as caught:
        kernel.exec(box["name"], "id -u", user=user)
    assert caught.value.details["field"] == "user"
    assert "agent's user (uid 65533) or as nobody (65534)" in caught.value.message
    assert len(kernel.exec_list(box["name"])) == before  # nothing was started


@pytest.mark.parametrize("user", [
    "nobody; id", "$(id -u)", "`id`", "../root", "root\n", " nobody", "nobody ", "", "a" * 33, "no/body",
    "nobody\x00", -1, 2 ** 32, 4294967295, "4294967295", "99999999999", 1.5, True, ["nobody"], {"uid": 0},
])
def test_malformed_users_are_invalid_arguments(kernel: Client, box: dict[str, Any], user: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        kernel._call(Op.EXEC, {"id": box["id"], "argv": ["/bin/true"], "user": user})
    assert caught.value.details.get("field") == "user"


def test_an_unsandboxed_root_agent_may_exec_as_itself_or_nobody(kernel: Client, plain: dict[str, Any]) -> None:
    assert kernel.exec(plain["name"], "id -u").stdout == b"0\n"
    assert kernel.exec(plain["name"], "id -u", user="root").stdout == b"0\n"
    result = kernel.exec(plain["name"], "id -u; cat /proc/self/status", user="nobody")
    uid, *status_lines = result.stdout.decode().splitlines()
    status = _status("\n".join(status_lines))
    assert uid == "65534" and status["Uid"].split() == status["Gid"].split() == ["65534"] * 4
    assert status["Groups"] == ""  # no supplementary group: not even root's
    assert {name: status[name] for name in CAP_SETS} == dict.fromkeys(CAP_SETS, "0000000000000000")
    assert status["NoNewPrivs"] == "1"
    with pytest.raises(PermissionDenied):
        kernel.exec(plain["name"], "id -u", user=1000)


def test_nobody_needs_the_agents_own_namespaces(kernel: Client) -> None:
    """With the host's network, nobody could reach the host's sockets that let nobody in."""
    agent = kernel.spawn("user-net", command=["/bin/sleep", "100000"], sandboxed=True, network=True)
    try:
        with pytest.raises(PermissionDenied) as caught:
            kernel.exec(agent["name"], "id -u", user="nobody")
        assert "shares the host's net namespace" in caught.value.message
        assert kernel.exec(agent["name"], "id -u").stdout == b"65533\n"
    finally:
        kernel.kill(id=agent["id"], grace=0)


def test_a_cwd_nobody_may_not_enter_is_named(kernel: Client, box: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        kernel.exec(box["name"], "pwd", cwd="/tmp/mine", user="nobody")
    assert caught.value.details["field"] == "cwd" and "as uid 65534" in caught.value.message


def test_the_cli(shared_kernel: KernelProcess, box: dict[str, Any]) -> None:
    base = [sys.executable, "-m", "agentos", "exec", "--socket", str(shared_kernel.socket_path)]
    ran = subprocess.run([*base, "--user", "nobody", box["name"], "--", "id", "-u"],
                         capture_output=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (0, b"65534\n")
    refused = subprocess.run([*base, "-u", "root", box["name"], "--", "id", "-u"], capture_output=True, timeout=120)
    assert refused.returncode == 1 and b"never as root" in refused.stderr and refused.stdout == b""


# --- a rootless kernel ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rootless() -> Iterator[tuple[Client, User]]:
    """A kernel run by a throwaway unprivileged user (its agents in a user namespace)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a throwaway user")
    _remove_stale_users()
    homes = Path(tempfile.mkdtemp(prefix="agentos-execuser-"))
    try:
        homes.chmod(0o755)
        with throwaway_user("u", homes) as user:
            root = homes / "k"
            root.mkdir()
            os.chown(root, user.uid, user.gid)
            k = KernelProcess(root / "k", command=[*wrapper(user.uid, user.gid), sys.executable, "-m", "agentos",
                                                    "kernel"])
            (root / "k").mkdir()
            os.chown(root / "k", user.uid, user.gid)
            k.start()
            try:
                with k.client(timeout=60) as client:
                    yield client, user
            finally:
                k.stop_checked()
        shutil.rmtree(Path(tempfile.gettempdir()).resolve() / f"agentos-{user.uid}", ignore_errors=True)
    finally:
        shutil.rmtree(homes, ignore_errors=True)


def test_a_rootless_kernels_exec_is_only_its_agents_user(rootless: tuple[Client, User]) -> None:
    client, user = rootless
    boxed = client.spawn("rootless-box", command=["/bin/sleep", "100000"], sandboxed=True)
    plain = client.spawn("rootless-plain", command=["/bin/sleep", "100000"], sandboxed=False)
    try:
        for agent in (boxed, plain):
            for own in (None, user.uid, str(user.uid), user.name):
                assert client.exec(agent["name"], "id -u", user=own).stdout == f"{user.uid}\n".encode()
        with pytest.raises(PermissionDenied) as caught:
            client.exec(boxed["name"], "id -u", user="nobody")
        assert f"maps only uid {user.uid}" in caught.value.message
        with pytest.raises(PermissionDenied) as caught:
            client.exec(plain["name"], "id -u", user="nobody")
        assert "kernel is not root" in caught.value.message
        for other in ("root", 0, NOBODY - 1):
            with pytest.raises(PermissionDenied):
                client.exec(boxed["name"], "id -u", user=other)
    finally:
        for agent in (boxed, plain):
            client.kill(id=agent["id"], grace=0)


# --- host-side views --------------------------------------------------------------------------

def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(_status(f.read())["Uid"].split()[0])


def _namespaces(pid: int) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("pid", "mnt", "net", "uts", "ipc", "cgroup", "user")}
