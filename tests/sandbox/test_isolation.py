"""Isolation as seen from inside the agent, for both spawn paths (zygote fork and exec)."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.sandbox import Launcher, SandboxSpec
from tests.sandbox.conftest import ADVERSARIAL, agent, require, run_agent


@pytest.fixture(scope="module")
def host_server() -> Iterator[socket.socket]:
    """A TCP server on the host's loopback: reachable from the host, never from a sandbox without network."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server


@pytest.fixture(scope="module", params=["zygote", "exec"])
def view(request: pytest.FixtureRequest, launcher: Launcher, host_server: socket.socket,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the inspection agent reports from inside a default sandbox."""
    require(launcher, "pid", "mount", "uts", "ipc", "net", "cgroup", "seccomp", "landlock")
    base = tmp_path_factory.mktemp(request.param)
    workdir = base / "work"
    workdir.mkdir()
    outside = base / "outside"
    outside.mkdir()
    checks = {"tcp": ["127.0.0.1", host_server.getsockname()[1]],
              "write": [str(workdir), "/tmp", "/usr", "/etc", "/", str(outside)]}
    result = run_agent(launcher, base, script=agent("inspect_view"), argv=[json.dumps(checks)],
                       via=request.param, workdir=str(workdir), hostname="alpha")
    report: dict[str, Any] = result.json()
    report["isolation"] = result.isolation
    report["workdir"], report["outside"] = str(workdir), str(outside)
    return report


def test_agent_is_pid_1_and_proc_shows_only_its_tree(view: dict[str, Any]) -> None:
    assert view["pid"] == 1
    assert view["ppid"] == 0  # its parent is outside the namespace
    assert view["proc_pids"] == [1]


def test_no_network_means_only_loopback_and_no_route_to_the_host(view: dict[str, Any]) -> None:
    assert view["links"] == ["lo"]
    # The host's 127.0.0.1 is another network namespace's loopback: nothing listens there.
    assert view["tcp"] == "ECONNREFUSED"


def test_writes_land_only_in_the_work_dir_and_private_tmp(view: dict[str, Any]) -> None:
    write = view["write"]
    assert write[view["workdir"]] == "ok"
    assert write["/tmp"] == "ok"
    for path in ("/usr", "/etc", "/"):
        assert write[path] == "EROFS", path
    # A host directory that was not bound does not exist in the agent's view at all.
    assert write[view["outside"]] == "ENOENT"


def test_private_tmp_is_not_the_hosts(launcher: Launcher, tmp_path: Path) -> None:
    marker = f"agentos-private-tmp-{os.getpid()}"
    result = run_agent(launcher, tmp_path, argv=["sh", "-c", f"echo x > /tmp/{marker} && cat /tmp/{marker}"])
    assert (result.returncode, result.stdout) == (0, "x\n")
    assert not os.path.exists(f"/tmp/{marker}")


def test_hostname_and_cwd(view: dict[str, Any]) -> None:
    assert view["hostname"] == "alpha" != socket.gethostname()
    assert view["cwd"] == view["workdir"]


def test_no_capabilities_no_new_privs_and_seccomp(view: dict[str, Any]) -> None:
    assert view["cap_eff"] == view["cap_bnd"] == "0000000000000000"
    assert view["no_new_privs"] == "1"
    assert view["seccomp"] == "2"


def test_cgroup_namespace_root_is_the_agents_own(view: dict[str, Any]) -> None:
    assert all(line.endswith(":/") for line in view["cgroup"]), view["cgroup"]


def test_root_holds_only_the_planned_view(view: dict[str, Any]) -> None:
    assert {"proc", "dev", "tmp", "usr", "etc"} <= set(view["root"])
    assert not {"home", "srv", "var", "boot", "mnt"} & set(view["root"])


def test_isolation_report_names_every_layer(view: dict[str, Any]) -> None:
    iso = view["isolation"]
    assert iso["sandboxed"] is True
    assert set(iso["namespaces"]) >= {"pid", "mount", "uts", "ipc", "net", "cgroup"}
    assert iso["network"] == "loopback"
    assert iso["seccomp"] is True
    assert iso["landlock_abi"] >= 1
    assert iso["no_new_privs"] is True and iso["capabilities"] == "none"
    assert iso["degraded"] == []


def test_network_true_shares_the_hosts(launcher: Launcher, host_server: socket.socket, tmp_path: Path) -> None:
    checks = {"tcp": ["127.0.0.1", host_server.getsockname()[1]]}
    view = run_agent(launcher, tmp_path, script=agent("inspect_view"), argv=[json.dumps(checks)],
                     network=True).json()
    assert view["tcp"] == "ok"
    assert len(view["links"]) == len(socket.if_nameindex())


def test_escape_attempts_are_all_blocked(launcher: Launcher, tmp_path: Path) -> None:
    require(launcher, "seccomp")
    result = run_agent(launcher, tmp_path, script=str(ADVERSARIAL / "escape_attempts.py"))
    report = result.json()
    assert report["escaped"] == [], {k: report["outcomes"][k] for k in report["escaped"]}
    for name in ("mount", "ptrace", "unshare user", "bpf", "keyctl", "reboot", "kexec_load", "init_module",
                 "perf_event_open", "swapon", "setns", "userfaultfd", "open_by_handle_at",
                 "vsock to the hypervisor"):
        assert report["outcomes"][name] == "EPERM", name


def test_network_probe_reaches_nothing(launcher: Launcher, host_server: socket.socket, tmp_path: Path) -> None:
    result = run_agent(launcher, tmp_path, script=str(ADVERSARIAL / "network_probe.py"),
                       argv=[f"127.0.0.1:{host_server.getsockname()[1]}"])
    report = result.json()
    assert report["interfaces"] == ["lo"]
    assert report["reachable"] == []


def test_the_agents_whole_tree_dies_with_it(launcher: Launcher, tmp_path: Path) -> None:
    # The agent leaves a grandchild running and exits: pid 1 of a namespace takes it along.
    result = run_agent(launcher, tmp_path, argv=["sh", "-c", "sleep 1000 & readlink /proc/self/ns/pid"])
    namespace = result.stdout.strip()
    assert result.returncode == 0 and namespace.startswith("pid:[")
    left = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                left.append(entry)
        except OSError:
            pass
    assert left == []


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_bounded_hogs_report_machine_checkable_results(launcher: Launcher, tmp_path: Path) -> None:
    memory = run_agent(launcher, tmp_path, script=str(ADVERSARIAL / "memory_hog.py"), argv=["24"])
    assert memory.returncode == 0, memory.stderr
    assert [line["mib"] for line in _json_lines(memory.stdout)] == [8, 16, 24, 24]
    cpu = run_agent(launcher, tmp_path, script=str(ADVERSARIAL / "cpu_hog.py"), argv=["0.2"])
    (report,) = _json_lines(cpu.stdout)
    assert report["agent"] == "cpu_hog" and report["wall_s"] >= 0.2 and 0 < report["share"]


def test_fork_bomb_children_die_with_it(launcher: Launcher, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "w+") as log:
        launched = launcher.launch(SandboxSpec(argv=["fork_bomb", "20"],
                                               python_script=str(ADVERSARIAL / "fork_bomb.py"), stdout_fd=log.fileno()))
        try:
            while not out.read_text() and launched.poll() is None:
                select.select([launched.pidfd], [], [], 0.05)  # wait for its report (or its death)
            assert json.loads(out.read_text()) == {"agent": "fork_bomb", "children": 20, "refused": None}
            assert launched.poll() is None  # still alive, holding its children
            launched.send_signal(signal.SIGKILL)
            assert launched.wait() == -signal.SIGKILL
        finally:
            launched.close()
    # The 20 children were in its pid namespace: nothing is left (the leak check agrees).


def test_the_view_mounts_two_superblocks_of_its_own(launcher: Launcher, tmp_path: Path) -> None:
    """Each superblock costs every memory cgroup on the host a shrinker-map slot (docs/sandboxes.md):
    the root tmpfs holds /dev, /tmp, /dev/shm and masks; only it and /proc are the view's own."""
    require(launcher, "mount")
    shown = tmp_path / "shown"
    (shown / "secret").mkdir(parents=True)
    (shown / "secret" / "key").write_text("hidden")
    secret = shown / "secret"
    result = run_agent(launcher, tmp_path, readonly_paths=[str(shown)], masked_paths=[str(secret)], argv=[
        "sh", "-c", "ls -A /dev | tr '\\n' ' '; echo; stat -c '%a' /tmp /dev/shm /dev | tr '\\n' ' '; echo; "
        f"ls -A {secret} | wc -l; "
        "for p in /dev/x /tmp/x /dev/shm/x " + str(secret) + "/x; do touch $p 2>/dev/null && echo ok || echo no; done; "
        "head -c 1 /dev/zero | wc -c; cat /proc/self/mountinfo"])
    assert result.returncode == 0, result.stderr
    dev, modes, hidden, *rest = result.stdout.splitlines()
    touched, zero, mountinfo = rest[:4], rest[4], rest[5:]
    assert set(dev.split()) == {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                                "stderr", "shm"}
    assert modes.split() == ["1777", "1777", "755"]
    assert hidden == "0"
    assert touched == ["no", "ok", "ok", "no"]  # /dev and the mask are read-only
    assert zero == "1"  # the device nodes still work
    with open("/proc/self/mountinfo") as f:
        host = {line.split()[2] for line in f}
    by_point = {line.split()[4]: line.split() for line in mountinfo}
    root, proc = by_point["/"][2], by_point["/proc"][2]
    assert {line.split()[2] for line in mountinfo} - host == {root, proc}
    # /tmp, /dev/shm and the mask are directories of the root tmpfs, each a mount of its own.
    assert [by_point[p][2] for p in ("/tmp", "/dev/shm", str(secret))] == [root] * 3
    assert by_point["/dev/shm"][5].startswith("rw") and by_point[str(secret)][5].startswith("ro")
