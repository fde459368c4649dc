"""SPAWN, LIST, WAIT, LOGS and READY through a real kernel."""
from __future__ import annotations

import os
import time

import pytest

import agentos
from agentos import AlreadyExists, InvalidArgument, NotFound, Timeout
from agentos.processes.logs import REST_AFTER
from agentos.testing.kernel import KernelProcess
from tests import host

from .conftest import agent, kernel_cgroup_dirs, pid_alive, require_cgroup_limits


def test_spawn_answers_the_seed_shape_and_more(shared_kernel, sandboxed) -> None:
    client = shared_kernel.client()
    name = f"sleepy-{'sandboxed' if sandboxed else 'plain'}"
    info = client.spawn(name, agent("sleeper"), sandboxed=sandboxed)
    assert {"id", "name", "pid", "status"} <= set(info)
    assert info["name"] == name and info["status"] == "running"
    assert info["parent"] is None
    assert pid_alive(info["pid"])
    isolation = info["isolation"]
    assert isolation["cgroup"]["driver"] in ("v1", "v2", "none")
    assert isolation["degraded"] == []
    assert isolation["sandbox"]["sandboxed"] is sandboxed
    if sandboxed:
        assert {"pid", "mount", "net"} <= set(isolation["sandbox"]["namespaces"])
    client.wait(id=info["id"], until="ready", timeout=60)
    [listed] = client.list_agents(name=name)
    assert listed["id"] == info["id"] and listed["status"] == "running" and listed["ready"]
    assert listed["started_at"] > 0 and listed["ended_at"] is None
    assert listed["argv"] == [agent("sleeper")]
    end = client.kill(id=info["id"], grace=5)
    assert end["status"] == "killed" and end["killed"] is True
    assert not pid_alive(info["pid"])


def test_exit_codes_and_logs(shared_kernel) -> None:
    client = shared_kernel.client()
    ok = client.spawn("ok", agent("printer"), args=["4", "0", "0"], sandboxed=False)
    bad = client.spawn("bad", agent("printer"), args=["3", "7", "0"], sandboxed=False)
    done = client.wait(id=ok["id"], timeout=60)
    assert done["status"] == "exited" and done["exit_code"] == 0 and done["signal"] is None
    failed = client.wait("bad", timeout=60)
    assert failed["status"] == "failed" and failed["exit_code"] == 7
    # stdout and stderr, in the order they were written.
    assert client.logs(id=ok["id"]) == "line 0\nline 1\nline 2\nline 3\n"
    assert client.logs("bad", tail=7) == "line 2\n"
    statuses = {a["name"]: a["status"] for a in client.list_agents() if a["name"] in ("ok", "bad")}
    assert statuses == {"ok": "exited", "bad": "failed"}
    assert "bad" in [a["name"] for a in client.list_agents(status="failed")]
    assert "ok" not in [a["name"] for a in client.list_agents(status="failed")]
    logs_dir = shared_kernel.state_dir / "logs"
    assert (logs_dir / f"ok-{ok['id']}.log").read_text().count("line") == 4
    assert bad["id"] != ok["id"]


def test_follow_streams_until_the_agent_ends(shared_kernel) -> None:
    client = shared_kernel.client()
    info = client.spawn("talker", agent("printer"), args=["6", "0", "0.05"], sandboxed=False)
    text = "".join(client.follow_logs(id=info["id"]))
    assert text == "".join(f"line {i}\n" for i in range(6))
    assert client.list_agents(name="talker")[0]["status"] == "exited"


def test_command_agents_and_environment(shared_kernel, tmp_path) -> None:
    client = shared_kernel.client()
    script = 'echo "$GREETING $AGENTOS_AGENT_NAME $PWD"; echo "secret=${AGENTOS_TEST_SECRET:-none}"; exit 3'
    info = client.spawn("shell", command=["sh", "-c", script], env={"GREETING": "hi"}, cwd=tmp_path,
                        sandboxed=False)
    end = client.wait(id=info["id"], timeout=60)
    assert end["exit_code"] == 3
    out = client.logs(id=info["id"])
    assert out.splitlines()[0] == f"hi shell {tmp_path}"
    assert out.splitlines()[1] == "secret=none"


def test_kernel_environment_does_not_leak(tmp_path) -> None:
    with KernelProcess(tmp_path / "k", env={"AGENTOS_TEST_SECRET": "s3cr3t"}) as kernel:
        client = kernel.client()
        info = client.spawn("env", command=["sh", "-c", 'echo "secret=${AGENTOS_TEST_SECRET:-none}"'],
                            sandboxed=False)
        client.wait(id=info["id"], timeout=60)
        assert client.logs(id=info["id"]) == "secret=none\n"


def test_bad_requests_are_refused_clearly(shared_kernel, tmp_path) -> None:
    client = shared_kernel.client()
    with pytest.raises(InvalidArgument, match="exactly one of script"):
        client.spawn("x", sandboxed=False)
    with pytest.raises(InvalidArgument, match="does not exist"):
        client.spawn("x", str(tmp_path / "missing.py"), sandboxed=False)
    with pytest.raises(InvalidArgument, match="not an executable"):
        client.spawn("x", command=["no-such-program-here"], sandboxed=False)
    with pytest.raises(InvalidArgument, match="name"):
        client.spawn("bad name!", agent("sleeper"), sandboxed=False)
    with pytest.raises(InvalidArgument, match="AGENTOS_FD"):
        client.spawn("x", agent("sleeper"), env={"AGENTOS_FD": "0"}, sandboxed=False)
    with pytest.raises(InvalidArgument, match="limits.memory"):
        client.spawn("x", agent("sleeper"), limits={"memory": "plenty"}, sandboxed=False)
    with pytest.raises(InvalidArgument, match="unknown field"):
        client._call(agentos.protocol.Op.SPAWN, {"script": agent("sleeper"), "sandbox": False})
    with pytest.raises(NotFound):
        client.kill("nobody")
    with pytest.raises(NotFound):
        client.wait(id="0123456789ab")
    with pytest.raises(InvalidArgument):
        client.ready()  # not an agent
    assert client.list_agents(name="x") == []
    assert client.echo("still here") == "still here"


def test_names_are_unique_among_running_agents(shared_kernel) -> None:
    client = shared_kernel.client()
    first = client.spawn("solo", agent("sleeper"), sandboxed=False)
    with pytest.raises(AlreadyExists):
        client.spawn("solo", agent("sleeper"), sandboxed=False)
    client.kill("solo", grace=5)
    second = client.spawn("solo", agent("sleeper"), sandboxed=False)
    assert second["id"] != first["id"]
    assert client.list_agents(name="solo", status="running")[0]["id"] == second["id"]
    client.wait(id=second["id"], until="ready", timeout=60)


def test_hello_reports_what_this_host_can_isolate(shared_kernel) -> None:
    hello = shared_kernel.client().hello()
    assert {"SPAWN", "KILL", "LIST", "WAIT", "LOGS", "READY"} <= set(hello["syscalls"])
    caps = hello["capabilities"]["processes"]
    found = host.cgroups()
    layout = caps["layout"]
    assert (layout["kind"], layout["v1_mounts"]) == (found.kind, found.v1)
    assert (layout["v2_mount"], layout["v2_controllers"]) == (found.v2, found.v2_controllers)
    sandbox = caps["sandbox"]
    machine = os.uname().machine
    assert sandbox["arch"] == (machine if machine in host.SECCOMP_ARCHES else "unsupported")
    assert sandbox["root"] is (os.geteuid() == 0)
    namespaces = host.namespaces()
    assert sandbox["namespaces"] == namespaces
    assert sandbox["user_namespaces"] is namespaces["user"]
    assert sandbox["mount_setattr"] is host.has_mount_setattr()
    assert sandbox["seccomp"] is host.seccomp_filters()
    assert sandbox["landlock_abi"] == host.landlock_abi()
    # Each missing feature says why (seccomp's note only when its probe failed, not by arch).
    missing = ({name for name, ok in namespaces.items() if not ok}
               | ({"landlock"} if not sandbox["landlock_abi"] else set())
               | ({"mount_setattr"} if not sandbox["mount_setattr"] else set()))
    assert set(sandbox["notes"]) - {"seccomp"} == missing


def test_hello_reports_the_cgroup_driver_root_gets(shared_kernel) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a normal user's driver depends on what systemd delegated")
    found = host.cgroups()
    on_v1 = [c for c in host.LIMIT_CONTROLLERS if c in found.v1]
    on_v2 = [c for c in host.LIMIT_CONTROLLERS if c in found.v2_controllers]
    # The hierarchy holding the most of the limit controllers; a v2 one holding none still
    # beats no hierarchy, since it tracks and kills process trees (docs/processes.md).
    if found.v1 and (not found.v2 or len(on_v1) > len(on_v2)):
        driver, enforceable = "v1", on_v1
    else:
        driver, enforceable = ("v2", on_v2) if found.v2 else ("none", [])
    cgroups = shared_kernel.client().hello()["capabilities"]["processes"]["cgroups"]
    assert (cgroups["driver"], cgroups["enforceable"], cgroups["delegated"]) == (driver, enforceable,
                                                                                 False)
    if driver == "v1":
        assert {found.v1[c] for c in on_v1} <= set(cgroups["roots"]) <= set(found.v1.values())
        assert cgroups["freezer"] is ("freezer" in found.v1)
    elif driver == "v2":
        assert cgroups["roots"] == [found.v2]
        # Every non-root v2 cgroup has cgroup.freeze since Linux 5.2.
        release = tuple(int(part) for part in os.uname().release.split(".")[:2])
        assert cgroups["freezer"] is (release >= (5, 2))


def test_wait_timeout_answers_only_that_request(shared_kernel) -> None:
    client = shared_kernel.client()
    info = client.spawn("waiter", agent("sleeper"), sandboxed=False)
    with pytest.raises(Timeout):
        client.wait(id=info["id"], timeout=0.05)
    assert client.list_agents(name="waiter")[0]["status"] == "running"
    client.wait(id=info["id"], until="ready", timeout=60)


def test_limits_are_applied_and_reported(shared_kernel) -> None:
    require_cgroup_limits()
    client = shared_kernel.client()
    info = client.spawn("limited", agent("sleeper"), sandboxed=False,
                        limits={"memory": "128Mi", "pids": 32, "cpu": 0.5})
    assert info["limits"] == {"memory": 128 * 1024 * 1024, "pids": 32, "cpu": 0.5}
    assert info["isolation"]["cgroup"]["enforced"] == ["cpu", "memory", "pids"]
    client.wait(id=info["id"], until="ready", timeout=60)
    usage = client.list_agents(name="limited")[0]["usage"]
    assert usage["pids_current"] >= 1 and usage["memory_current"] > 0
    for directory in kernel_cgroup_dirs(shared_kernel.pid):
        assert (directory / info["id"]).is_dir()
    client.kill(id=info["id"], grace=5)
    for directory in kernel_cgroup_dirs(shared_kernel.pid):
        assert not (directory / info["id"]).exists(), "the agent's cgroup outlived it"


def test_agents_spawn_children_and_the_tree_is_recorded(shared_kernel, sandboxed) -> None:
    client = shared_kernel.client()
    mode = "sandboxed" if sandboxed else "plain"
    parent = client.spawn(f"parent-{mode}", agent("spawner"), sandboxed=sandboxed,
                          capabilities=["spawn", "kill"])
    client.wait(id=parent["id"], until="ready", timeout=60)
    [child] = client.list_agents(name=f"child-of-parent-{mode}")
    assert child["parent"] == parent["id"] and child["sandboxed"]
    # The agent learned its child's id from the kernel's answer.
    assert f"child {child['id']}" in client.logs(id=parent["id"])
    client.kill(id=parent["id"], grace=5)
    end = client.wait(id=child["id"], timeout=60)
    assert end["status"] == "killed", "a child agent outlived its parent"


def test_lifecycle_events_are_published(shared_kernel) -> None:
    watcher = shared_kernel.client()
    client = shared_kernel.client()
    with watcher.subscribe("agent.*") as events:
        info = client.spawn("evented", agent("printer"), args=["1", "5", "0"], sandboxed=False)
        seen = []
        for event in events:
            if event.get("id") == info["id"]:
                seen.append(event)
            if len(seen) == 2:
                break
    assert [e["topic"] for e in seen] == ["agent.started", "agent.exited"]
    assert seen[1]["status"] == "failed" and seen[1]["exit_code"] == 5
    assert seen[1]["name"] == "evented"


def test_async_client(shared_kernel) -> None:
    import asyncio

    async def main() -> None:
        async with await agentos.AsyncClient.connect(shared_kernel.socket_path) as client:
            info = await client.spawn("aio", agent("printer"), args=["2", "0", "0"], sandboxed=False)
            end = await client.wait(id=info["id"], timeout=60)
            assert end["status"] == "exited"
            assert await client.logs(id=info["id"]) == "line 0\nline 1\n"
            assert [a["id"] for a in await client.list_agents(name="aio")] == [info["id"]]

    asyncio.run(main())


def test_sandboxed_agent_gets_its_own_hostname(shared_kernel) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the full sandbox (namespaces, seccomp, Landlock)")
    client = shared_kernel.client()
    named = client.spawn("h1", command=["hostname"], hostname="box")
    default = client.spawn("h2", command=["hostname"])
    assert client.wait(id=named["id"], timeout=60)["status"] == "exited"
    assert client.wait(id=default["id"], timeout=60)["status"] == "exited"
    assert client.logs(id=named["id"]) == "box\n"
    assert client.logs(id=default["id"]) == "h2\n"


def test_logs_are_size_capped(tmp_path) -> None:
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text("version: 1\nkernel:\n  processes: {log_max_bytes: 1Ki}\n"
                        "agents:\n  unused: {command: [sh, -c, 'true']}\n")
    with KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]) as kernel:
        client = kernel.client()
        info = client.spawn("chatty", agent("printer"), args=["600", "0", "0"], sandboxed=False)
        client.wait(id=info["id"], timeout=60)
        files = sorted((kernel.state_dir / "logs").glob(f"chatty-{info['id']}.log*"))
        assert [f.name[-6:] for f in files] == [f"{info['id'][-2:]}.log", ".log.1"]
        assert all(f.stat().st_size <= 1024 for f in files)
        tail = client._call(agentos.protocol.Op.LOGS, {"id": info["id"]})
        assert tail["truncated"] and tail["size"] == sum(len(f"line {i}\n") for i in range(600))
        assert tail["data"].endswith("line 598\nline 599\n")
        assert tail["offset"] + len(tail["data"]) == tail["size"]


def _settled_fd_count(fd_dir: str, deadline: float, quiet: float = 0.5) -> int:
    """The kernel's descriptor count once it has stayed the same for ``quiet`` seconds: after a
    sandboxed launch its threads hold a few for a moment (the spare cgroup made for the next
    embryo, an ended agent's teardown), so one count may catch them."""
    count, since = len(os.listdir(fd_dir)), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"the kernel's descriptors never settled ({count})"
        time.sleep(0.05)
        now = len(os.listdir(fd_dir))
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_reaped_agents_leave_no_descriptors_in_the_kernel(shared_kernel) -> None:
    client = shared_kernel.client()
    fd_dir = f"/proc/{shared_kernel.pid}/fd"
    client.echo("accepted")  # our own connection is open on the kernel's side before counting
    # Agents earlier tests left running hand their pipes to the holder (and close their log
    # files) once quiet for REST_AFTER: counted before that, they would end the count lower.
    before = _settled_fd_count(fd_dir, time.monotonic() + 60, quiet=REST_AFTER + 0.5)
    infos = [client.spawn(f"fd-{i}", agent("printer"), args=["1", "0", "0"],
                          sandboxed=i % 2 == 0 and os.geteuid() == 0)
             for i in range(6)]
    for info in infos:
        assert client.wait(id=info["id"], timeout=60)["status"] == "exited"
    # Pipe, log file, pidfd and kernel end of the socketpair: all closed once reaped.
    assert _settled_fd_count(fd_dir, time.monotonic() + 60) == before
