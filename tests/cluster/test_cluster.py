"""Agents on a two-node Ray cluster, driven by a kernel on this machine (both "nodes" are this
machine, so each test can look at an agent's process and cgroup directly)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agentos.errors import AgentOSError, InvalidArgument, Unavailable
from agentos.manifest.schema import DEFAULT_CAPABILITIES
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

from .conftest import MiB, RayCluster, agent

pytestmark = pytest.mark.ray

WORKER = {"labels": {"pool": "agents"}}
HEAD = {"labels": {"pool": "gateway"}}
#: The defaults, and the shared state store the couriers meet in.
SHARING = [*DEFAULT_CAPABILITIES, "state_shared"]


def until(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true (a bound on waiting, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def gone(pid: int) -> bool:
    """The process no longer exists (or is a zombie nobody will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def cgroup_dirs(pid: int) -> list[Path]:
    """The directories of ``pid``'s cgroups that agentos made (v1: one per hierarchy; v2: one)."""
    dirs = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "/agentos/" not in path:
            continue
        base = Path("/sys/fs/cgroup")
        if controllers:
            base /= next(c for c in controllers.split(",") if c)
            if not base.exists():
                base = Path("/sys/fs/cgroup") / controllers
        dirs.append(base / path.lstrip("/"))
    return dirs


def test_placement_by_label_and_ps_shows_the_node(ray_kernel: KernelProcess, ray_cluster: RayCluster) -> None:
    placements: dict[str, dict[str, Any] | None] = {"w": WORKER, "h": HEAD, "l": None}

    def spawn(name: str) -> dict[str, Any]:
        with ray_kernel.client() as spawner:
            return spawner.spawn(name, agent("sleeper"), placement=placements[name])

    # At once: each host's start on its node is seconds of a Ray worker's.
    with ThreadPoolExecutor(len(placements)) as pool:
        on_worker, on_head, local = pool.map(spawn, placements)
    with ray_kernel.client() as client:
        assert on_worker["node"] == on_worker["isolation"]["node"]["id"] == ray_cluster.worker.node_id
        assert on_worker["isolation"]["node"]["labels"] == {"pool": "agents"}
        assert on_head["node"] == ray_cluster.head.node_id
        assert local["node"] is None
        for name in ("w", "h", "l"):
            client.wait(name, until="ready", timeout=60)
        running = client.list_agents(status="running")
        nodes = {a["name"]: a["node"] for a in running}
        assert nodes == {"w": ray_cluster.worker.node_id, "h": ray_cluster.head.node_id, "l": None}
        # Read from its node for this LIST, not a figure from before.
        usage = next(a for a in running if a["name"] == "w")["usage"]
        assert usage["memory_current"] > 0 and usage["pids_current"] >= 1
        # Printed after its READY: it may reach the kernel after the LIST above.
        until(lambda: "up as pid" in client.logs("w"), "w's output in its log")
        ps = subprocess.run([sys.executable, "-m", "agentos", "ps", "--socket", str(ray_kernel.socket_path)],
                            capture_output=True, text=True, check=True).stdout.splitlines()
        assert ps[0].split() == ["NAME", "ID", "PID", "STATUS", "UPTIME", "RESTARTS", "MEMORY", "CPU", "TOKENS",
                                 "USD", "NODE"]
        shown = {line.split()[0]: line.split() for line in ps[1:]}
        assert {name: row[-1] for name, row in shown.items()} == {
            "w": ray_cluster.worker.node_id[:8], "h": ray_cluster.head.node_id[:8], "l": "-"}
        # Its pid on its node, and its cgroup's usage there.
        assert shown["w"][2] == str(on_worker["pid"]) and shown["w"][6] != "-" and shown["w"][7] != "-"
        for name in ("w", "h", "l"):
            assert client.kill(name, grace=5)["status"] == "killed"


def test_a_groups_members_land_as_its_strategy_says(ray_kernel: KernelProcess, ray_cluster: RayCluster) -> None:
    apart = {"group": {"name": "apart", "size": 2, "strategy": "strict-spread"}}
    together = {**WORKER, "group": {"name": "together", "size": 2, "strategy": "strict-pack"}}
    members: dict[str, dict[str, Any]] = {"a-1": apart, "a-2": apart, "t-1": together, "t-2": together}

    def spawn(name: str) -> str:
        with ray_kernel.client() as client:
            return str(client.spawn(name, agent("sleeper"), placement=members[name])["node"])

    with ThreadPoolExecutor(len(members)) as pool:
        nodes = dict(zip(members, pool.map(spawn, members)))
    assert {nodes["a-1"], nodes["a-2"]} == {ray_cluster.head.node_id, ray_cluster.worker.node_id}
    assert nodes["t-1"] == nodes["t-2"] == ray_cluster.worker.node_id
    with ray_kernel.client() as client:
        for name in members:
            assert client.wait(name, until="ready", timeout=60)["status"] == "running", client.logs(name)
        with pytest.raises(Unavailable, match="group 'apart' is full"):
            client.spawn("a-3", agent("sleeper"), placement=apart)
        with pytest.raises(InvalidArgument, match="every member must ask for the same") as other:
            client.spawn("a-3", agent("sleeper"), placement={"group": {**apart["group"], "size": 3}})
        assert other.value.details["field"] == "placement.group"
        for name in members:
            assert client.kill(name, grace=5)["status"] == "killed"
        # The last member's end removed the group: its name is free for another.
        again = client.spawn("a-3", agent("sleeper"), placement={"group": {"name": "apart", "size": 1}})
        assert again["node"] in (ray_cluster.head.node_id, ray_cluster.worker.node_id)
        client.kill("a-3", grace=5)


def _spawn_in_thread(kernel: KernelProcess, name: str, outcome: dict[str, Any], **options: Any) -> threading.Thread:
    """A SPAWN of a sleeper that is to wait for a node, in a thread (not started yet): it blocks
    until the agent is placed or refused, and the error it ends with lands in ``outcome``."""
    def spawn() -> None:
        with kernel.client() as spawner:
            try:
                spawner.spawn(name, agent("sleeper"), **options)
            except AgentOSError as exc:
                outcome["error"] = exc

    return threading.Thread(target=spawn)


def test_more_memory_than_any_node_stays_pending(ray_kernel: KernelProcess) -> None:
    outcome: dict[str, Any] = {}
    thread = _spawn_in_thread(ray_kernel, "big", outcome, limits={"memory": "4000Gi"},
                              placement={**WORKER, "timeout": "3s"})
    thread.start()
    try:
        with ray_kernel.client() as client:
            pending = until(lambda: client.list_agents(status="pending"), "the agent listed as pending")
    finally:
        thread.join()
    assert [row["name"] for row in pending] == ["big"]
    assert pending[0]["status"] == "pending"
    assert "memory" in pending[0]["reason"] and "lacks memory" in pending[0]["reason"]
    error = outcome["error"]
    assert isinstance(error, Unavailable), error
    assert "found no node within 3s" in str(error) and error.details["pending"] is True
    with ray_kernel.client() as client:
        assert client.list_agents(status="pending") == []
        assert client.list_agents(name="big") == []


def test_kill_ends_an_agent_still_waiting_for_a_node(ray_kernel: KernelProcess) -> None:
    # Three members, each on a node of its own, and one node labelled pool=agents: Ray cannot place it.
    crowd = {**WORKER, "group": {"name": "crowd", "size": 3, "strategy": "strict-spread"}}
    outcome: dict[str, Any] = {}
    thread = _spawn_in_thread(ray_kernel, "crowd-1", outcome, placement=crowd)
    thread.start()
    try:
        with ray_kernel.client() as client:
            pending = until(lambda: client.list_agents(status="pending"), "the member listed as pending")
            assert "it needs 3 nodes that each hold a member; 1 can" in pending[0]["reason"], pending[0]["reason"]
            ps = subprocess.run([sys.executable, "-m", "agentos", "ps", "--socket", str(ray_kernel.socket_path)],
                                capture_output=True, text=True, check=True).stdout.splitlines()
            # No pid, no uptime, no usage yet (ps lists the session's ended agents too).
            row = next(line.split() for line in ps[1:] if line.split()[0] == "crowd-1")
            assert row[:7] == ["crowd-1", pending[0]["id"], "-", "pending", "-", "0", "-"]
            killed = client.kill("crowd-1", grace=5)
    finally:
        thread.join()
    assert killed["status"] == "killed" and killed["killed"] is True and killed["id"] == pending[0]["id"]
    error = outcome["error"]
    assert isinstance(error, Unavailable), error
    assert "was killed while it waited for a node" in str(error)
    assert error.details["status"] == "killed" and error.details["id"] == killed["id"]
    with ray_kernel.client() as client:
        assert client.list_agents(status="pending") == [] and client.list_agents(name="crowd-1") == []


def test_think_from_the_worker_goes_through_the_kernels_gateway(ray_kernel: KernelProcess, fake: FakeGemini,
                                                              ray_cluster: RayCluster) -> None:
    seen = len(fake.requests)
    with ray_kernel.client() as client:
        spawned = client.spawn("thinker", agent("thinker"), placement=WORKER, capabilities=SHARING)
        assert spawned["node"] == ray_cluster.worker.node_id
        ended = client.wait("thinker", timeout=60)
        assert ended["status"] == "exited", client.logs("thinker")
        assert "answer: " in client.logs("thinker")
        assert client.fetch("answer", scope="shared") == "echo: say hello from the worker node"
    # The agent holds no key: the kernel's gateway made the call, with the kernel's key.
    calls = [r for r in fake.requests[seen:] if "say hello from the worker node" in str(r.body)]
    assert len(calls) == 1


def test_state_and_mail_between_agents_on_different_nodes(ray_kernel: KernelProcess) -> None:
    with ray_kernel.client() as client:
        client.spawn("receiver", agent("courier"), args=["receive"], placement=WORKER,
                     capabilities=SHARING)
        client.wait("receiver", until="ready", timeout=60)
        client.spawn("sender", agent("courier"), args=["send", "receiver", "parcel-42"], placement=HEAD,
                     capabilities=SHARING)
        assert client.wait("sender", timeout=60)["status"] == "exited", client.logs("sender")
        assert client.wait("receiver", timeout=60)["status"] == "exited", client.logs("receiver")
        log = client.logs("receiver")
    assert f"mail: parcel-42 from uid:{os.getuid()}/sender" in log
    assert "state: parcel-42" in log


def test_an_agent_on_a_removed_node_restarts_on_another(ray_kernel: KernelProcess, ray_cluster: RayCluster) -> None:
    first = ray_cluster.add_node(labels={"pool": "spot"})
    second = None
    try:
        with ray_kernel.client() as client:
            spawned = client.spawn("spot", agent("sleeper"), placement={"labels": {"pool": "spot"}},
                                   restart={"policy": "on-failure", "backoff": 0.1})
            assert spawned["node"] == first.node_id
            client.wait("spot", until="ready", timeout=60)
            second = ray_cluster.add_node(labels={"pool": "spot"})
            ray_cluster.cluster.remove_node(first)
            again = until(lambda: [a for a in client.list_agents(name="spot", status="running")
                                   if a["restarts"] == 1 and a["ready"]], "the agent restarted and ready", 120)
            assert again[0]["node"] == second.node_id
            ended = [a for a in client.list_agents(name="spot") if a["status"] != "running"]
            assert ended and ended[0]["status"] == "failed" and ended[0]["signal"] == signal.SIGKILL
            # No spot node left: its next restart waits for one, until a KILL ends it.
            ray_cluster.cluster.remove_node(second)
            until(lambda: client.list_agents(name="spot", status="pending"), "the restart waiting for a node", 120)
            assert client.kill("spot", grace=5)["status"] == "killed"
            assert client.list_agents(status="pending") == []
            assert [a["status"] for a in client.list_agents(name="spot")] == ["failed", "failed"]
    finally:
        for node in (first, second):
            if node is not None and node in ray_cluster.cluster.worker_nodes:
                ray_cluster.cluster.remove_node(node)


def test_a_crashed_host_ends_its_agents_and_a_restart_gets_a_new_one(ray_kernel: KernelProcess) -> None:
    with ray_kernel.client() as client:
        spawned = client.spawn("crashy", agent("sleeper"), placement=WORKER,
                               restart={"policy": "on-failure", "backoff": 0.1})
        client.wait("crashy", until="ready", timeout=60)
        host, pid = spawned["isolation"]["node"]["actor_pid"], spawned["pid"]
        dirs = cgroup_dirs(pid)
        os.kill(host, signal.SIGKILL)
        # Its agent dies with its host; the kernel sees the host lost and restarts the agent,
        # on a host started anew on the same node (the only one with its label).
        again = until(lambda: [a for a in client.list_agents(name="crashy", status="running")
                               if a["restarts"] == 1 and a["ready"]], "the agent restarted and ready", 120)
        ended = [a for a in client.list_agents(name="crashy") if a["status"] != "running"]
        assert ended and ended[0]["status"] == "failed" and ended[0]["signal"] == signal.SIGKILL, ended
        until(lambda: gone(pid), "the first agent's process gone")
        assert again[0]["node"] == spawned["node"] and again[0]["pid"] != pid
        # What the dead host left (the agent's cgroup) the next host on the node removes.
        until(lambda: not any(d.exists() for d in dirs), "the first agent's cgroup removed")
        assert client.kill("crashy", grace=5)["status"] == "killed"


def test_secure_defaults_are_enforced_on_the_worker_and_kill_leaves_nothing_there(ray_kernel: KernelProcess) -> None:
    # One agent for both (each placed agent costs a Ray worker process and a zygote).
    with ray_kernel.client() as client:
        spawned = client.spawn("plain", agent("sleeper"), placement=WORKER)
        client.wait("plain", until="ready", timeout=60)
        pid, host = spawned["pid"], spawned["isolation"]["node"]["actor_pid"]
        isolation = spawned["isolation"]
        assert isolation["degraded"] == []
        assert isolation["cgroup"]["enforced"] == ["cpu", "memory", "pids"]
        sandbox = isolation["sandbox"]
        assert sandbox["seccomp"] and sandbox["no_new_privs"] and sandbox["network"] == "loopback"
        assert {"pid", "mount", "net", "user"} - set(sandbox["namespaces"]) <= {"user"}
        dirs = cgroup_dirs(pid)
        assert dirs and all(d.exists() for d in dirs)
        limits = {}
        # The limits are on the agent's directory; its processes sit in it or in the leaf below it.
        for directory in {d if d.name == spawned["id"] else d.parent for d in dirs}:
            for name in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                if (directory / name).exists():
                    limits[name.split(".")[0]] = int((directory / name).read_text())
        assert limits == {"memory": 512 * 1024 * 1024, "pids": 128}
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == sandbox["uid"] != 0
        assert client.kill("plain", grace=5)["status"] == "killed"
    until(lambda: gone(pid), "the agent's process gone")
    until(lambda: not any(d.exists() for d in dirs), "its cgroup removed")
    if isolation["node"]["host"] == "agent":
        until(lambda: gone(host), "its AgentHost actor's process gone")
    else:
        # The node's host stays for the next agent placed there.
        assert not gone(host)


def host_kind(pid: int) -> str:
    """The Ray actor class a host process runs (Ray titles its workers ``ray::CLASS``)."""
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()
    return title.removeprefix("ray::").split(".")[0]


def test_agents_share_their_nodes_host_only_in_node_mode(ray_kernel: KernelProcess, hosts: str) -> None:
    names = ["d-1", "d-2", "d-3"]

    def spawn(name: str) -> dict[str, Any]:
        with ray_kernel.client() as spawner:
            return spawner.spawn(name, agent("sleeper"), placement=WORKER, limits={"memory": "64Mi"})

    with ThreadPoolExecutor(len(names)) as pool:
        spawned = dict(zip(names, pool.map(spawn, names)))
    hosting = {name: s["isolation"]["node"]["actor_pid"] for name, s in spawned.items()}
    assert {s["isolation"]["node"]["host"] for s in spawned.values()} == {hosts}
    if hosts == "node":
        assert len(set(hosting.values())) == 1 and host_kind(hosting["d-1"]) == "NodeHost", hosting
    else:
        assert len(set(hosting.values())) == 3 and {host_kind(p) for p in hosting.values()} == {"AgentHost"}
    with ray_kernel.client() as client:
        for name in names:
            client.wait(name, until="ready", timeout=60)
        first = cgroup_dirs(spawned["d-1"]["pid"])
        # Killing one ends it alone: its neighbours on the same host keep running and answering.
        assert client.kill("d-1", grace=0)["status"] == "killed"
        until(lambda: gone(spawned["d-1"]["pid"]), "the killed agent's process gone")
        until(lambda: not any(d.exists() for d in first), "its cgroup removed")
        running = {a["name"] for a in client.list_agents(status="running")}
        assert running == {"d-2", "d-3"}
        assert all(not gone(spawned[name]["pid"]) for name in ("d-2", "d-3"))
        usage = {a["name"]: a["usage"] for a in client.list_agents(status="running")}
        assert all(u["memory_current"] > 0 and u["pids_current"] >= 1 for u in usage.values()), usage
        for name in ("d-2", "d-3"):
            assert client.kill(name, grace=5)["status"] == "killed"


def test_a_neighbour_on_the_same_host_cannot_touch_an_agent(ray_kernel: KernelProcess, hosts: str) -> None:
    with ray_kernel.client() as client:
        victim = client.spawn("victim", agent("neighbour"), args=["victim"], placement=WORKER)
        client.wait("victim", until="ready", timeout=60)
        attacker = client.spawn("attacker", agent("neighbour"), args=["attack", str(victim["pid"]), victim["id"]],
                                placement=WORKER)
        shared = attacker["isolation"]["node"]["actor_pid"] == victim["isolation"]["node"]["actor_pid"]
        assert shared == (hosts == "node")
        assert client.wait("attacker", timeout=60)["status"] == "exited", client.logs("attacker")
        outcomes = json.loads(client.logs("attacker").strip().splitlines()[-1])
        # Its own pid namespace has no such process; its /proc shows only its own; the kernel
        # answers the fetch as the attacker's, whatever host carried it.
        assert outcomes == {"kill": "ProcessLookupError", "environ": "FileNotFoundError",
                            "fetch": "PermissionDenied"}, outcomes
        assert not gone(victim["pid"])
        assert [a["name"] for a in client.list_agents(status="running")] == ["victim"]
        assert client.kill("victim", grace=0)["status"] == "killed"


def freezer_state(pid: int) -> str:
    """``FROZEN`` or ``THAWED``: the freezer's word on ``pid``'s own cgroup (v1, or v2's events)."""
    for directory in cgroup_dirs(pid):
        if (directory / "freezer.state").exists():
            return (directory / "freezer.state").read_text().strip()
        if (directory / "cgroup.events").exists() and (directory / "cgroup.freeze").exists():
            return "FROZEN" if "frozen 1" in (directory / "cgroup.events").read_text() else "THAWED"
    raise AssertionError(f"no freezer for pid {pid}")


def test_pause_and_resume_an_agent_on_its_node(ray_kernel: KernelProcess, hosts: str) -> None:
    with ray_kernel.client() as client:
        spawned = client.spawn("napper", agent("printer"), args=["100000", "0.01"], placement=WORKER)
        assert spawned["isolation"]["cgroup"]["pause"] is True
        pid = spawned["pid"]
        until(lambda: "line 3" in client.logs("napper"), "its first lines")
        assert client.pause("napper")["paused"] is True
        # Answered once frozen, on its node.
        assert freezer_state(pid) == "FROZEN"
        assert [a["status"] for a in client.list_agents(name="napper")] == ["paused"]
        time.sleep(0.2)  # what it wrote before the freeze reaches its log
        printed = client.logs("napper")
        time.sleep(0.5)  # a line every 10 ms were it running
        assert client.logs("napper") == printed
        assert client.resume("napper")["resumed"] is True
        assert freezer_state(pid) == "THAWED"
        until(lambda: len(client.logs("napper")) > len(printed), "lines again after RESUME")
        # A paused agent is thawed to take its KILL.
        assert client.pause("napper")["paused"] is True
        assert client.kill("napper", grace=5)["status"] == "killed"
    until(lambda: gone(pid), "the agent's process gone")


def test_a_placed_agents_children_are_placed_as_it_is_and_never_looser(ray_kernel: KernelProcess,
                                                                      ray_cluster: RayCluster, hosts: str) -> None:
    with ray_kernel.client() as client:
        client.spawn("parent", agent("parent"), args=[agent("sleeper")], placement=WORKER,
                     limits={"memory": "128Mi", "pids": 32}, capabilities=[*DEFAULT_CAPABILITIES, "spawn"])
        client.wait("parent", until="ready", timeout=120)
        # Its output and its connection cross apart: the line may follow its READY.
        line = until(lambda: client.logs("parent").strip(), "its outcomes in its log")
        outcomes = json.loads(line.splitlines()[-1])
        # Its child asked for no placement: it runs where its parent's placement sends it.
        assert outcomes["kid"]["node"] == ray_cluster.worker.node_id
        # Asking for more than the parent holds is refused by the kernel, as for a local parent:
        # memory, and where it may run (another node pool) or what it reserves (a GPU).
        assert {name: outcomes[name] for name in ("loose", "elsewhere", "gpu")} == {
            "loose": "PermissionDenied: limits.memory", "elsewhere": "PermissionDenied: placement.labels",
            "gpu": "PermissionDenied: placement.gpus"}, outcomes
        kid = outcomes["kid"]["pid"]
        limits = {}
        for directory in {d if (d / "memory.limit_in_bytes").exists() or (d / "memory.max").exists() else d.parent
                          for d in cgroup_dirs(kid)}:
            for name in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                if (directory / name).exists():
                    limits[name.split(".")[0]] = int((directory / name).read_text())
        # The defaults (512Mi, 128 pids), capped by the parent's on the kid's node.
        assert limits == {"memory": 128 * 1024 * 1024, "pids": 32}, limits
        for name in ("kid", "parent"):
            assert client.kill(name, grace=0)["status"] == "killed"


def test_an_agent_never_sees_the_clusters_token_even_when_it_binds_it(ray_kernel: KernelProcess) -> None:
    token = os.environ["RAY_AUTH_TOKEN_PATH"]
    assert os.path.getsize(token) > 0
    with ray_kernel.client() as client:
        # Ray's temp dir (its sockets) is under RAY_TMPDIR: the node's, as its host reads it from Ray.
        spawned = client.spawn("reader", agent("reader"), args=[token], placement=WORKER,
                               readonly_paths=[os.path.dirname(token), os.environ["RAY_TMPDIR"]])
        # The node masks both in every agent's view that would show them.
        masked = spawned["isolation"]["sandbox"]["masked"]
        assert token in masked, masked
        assert os.path.join(os.environ["RAY_TMPDIR"], "ray") in masked, masked
        assert client.wait("reader", timeout=60)["status"] == "exited"
        assert client.logs("reader") in ("read 0 bytes\n", "cannot read: Permission denied\n")


def test_large_replies_reach_a_placed_agent_whole_and_in_order(ray_kernel: KernelProcess, hosts: str) -> None:
    # Each 600 KB reply crosses as pieces of up to 256 KiB, which Ray fetches apart from the
    # call (over 100 KiB): without their numbers a later piece could overtake an earlier one.
    with ray_kernel.client() as client:
        client.spawn("bulk", agent("bulk"), placement=WORKER)
        ended = client.wait("bulk", timeout=120)
        assert ended["status"] == "exited", client.logs("bulk")
        assert client.logs("bulk") == "whole 8 of 8\n"


def test_an_output_flood_from_a_placed_agent_arrives_whole(ray_kernel: KernelProcess, hosts: str) -> None:
    # 16 MiB at once: past the host's 4 MiB high-water mark its output waits for the kernel's pulls.
    with ray_kernel.client() as client:
        client.spawn("flood", agent("flood"), placement=WORKER)
        assert client.wait("flood", timeout=120)["status"] == "exited", client.logs("flood")[-300:]
        lines = until(lambda: (log := client.logs("flood", tail=16 * MiB).splitlines())
                      and log[-1] == "flood done" and log, "its last line in its log")
    # Whatever part of it the log keeps and LOGS returns (its first line may start mid-line):
    # more than the host's high-water mark, in order and whole.
    kept = lines[1:-1]
    assert len(kept) > 64, len(kept)
    assert [line.split(" ", 1)[0] for line in kept] == [f"{i:08d}" for i in range(256 - len(kept), 256)]
    assert all(line[8:] == " " + "x" * (64 * 1024 - 16) for line in kept)


def test_logs_follow_and_wait_an_agent_on_the_worker(ray_kernel: KernelProcess) -> None:
    with ray_kernel.client() as client:
        client.spawn("printer", agent("printer"), args=["20", "0.02"], placement=WORKER)
        followed = "".join(client.follow_logs("printer"))
        ended = client.wait("printer", timeout=60)
    assert followed == "".join(f"line {i}\n" for i in range(20))
    assert ended["status"] == "failed" and ended["exit_code"] == 3
    assert ended["usage"]["cpu_usage_usec"] and ended["usage"]["pids_current"] == 0


#: For a test whose subject does not depend on how agents are hosted: one mode is enough.
ONE_MODE = pytest.mark.parametrize("hosts", ["node"])


@ONE_MODE
def test_a_placement_timeout_past_a_year_is_named(ray_kernel: KernelProcess, hosts: str) -> None:
    with ray_kernel.client() as client:
        with pytest.raises(InvalidArgument) as caught:
            client.spawn("late", agent("sleeper"), placement={**WORKER, "timeout": "99999999h"})
        assert caught.value.details["field"] == "placement.timeout"
        assert client.list_agents(name="late") == []


@ONE_MODE
def test_doctor_reports_each_nodes_isolation_and_rays_state(ray_kernel: KernelProcess, ray_cluster: RayCluster,
                                                           hosts: str) -> None:
    from agentos.sandbox import landlock
    from agentos.sandbox.probe import probe

    # No address given: the running kernel's cluster.
    result = subprocess.run([sys.executable, "-m", "agentos", "doctor", "--cluster", "--json",
                             "--socket", str(ray_kernel.socket_path)], capture_output=True, text=True, timeout=120)
    checks = json.loads(result.stdout)["checks"]
    ray_state = next(c for c in checks if c["check"] == "ray")
    assert ray_state["level"] == "ok" and ray_state["address"] == ray_cluster.address, ray_state
    assert "the running kernel's" in ray_state["detail"]
    assert ray_state["resources"]["llm_gateway"] == 1 and ray_state["resources"]["agent_slots"] == 8
    by_node: dict[str, dict[str, Any]] = {}
    for check in checks:
        if check.get("node"):
            by_node.setdefault(check["node"], {})[check["check"]] = check
    here = probe()
    for node, labels in ((ray_cluster.head, {"pool": "gateway"}), (ray_cluster.worker, {"pool": "agents"})):
        found = by_node[node.node_id]
        assert found["host"]["level"] == "ok" and found["host"]["labels"] == labels, found["host"]
        # Made on that node, by a task there: the same report as this host's (both are this machine).
        assert found["host"]["isolation"]["sandbox"] == here.as_dict()
        assert found["namespaces"]["detail"] == ", ".join(sorted(here.namespaces))
        assert found["seccomp"]["level"] == "ok"
        assert found["landlock"]["detail"] == f"ABI {landlock.abi()}"
        assert found["cgroups"]["level"] == "ok" and found["cgroups"]["enforced"] == ["cpu", "memory", "pids"]
    assert not [c for c in checks if (c.get("node") or c["check"] == "ray") and c["level"] == "fail"]


def test_a_stopping_kernel_ends_its_placed_agents(ray_kernel: KernelProcess) -> None:
    # The session's kernel, stopped here: last in this file, so no later test starts another.
    kernel = ray_kernel
    outcome: dict[str, Any] = {}
    thread = _spawn_in_thread(kernel, "waiting", outcome, limits={"memory": "4000Gi"},
                              placement={**WORKER, "timeout": "5m"})
    try:
        with kernel.client() as client:
            spawned = client.spawn("left", agent("sleeper"), placement=WORKER)
            client.wait("left", until="ready", timeout=60)
            thread.start()
            until(lambda: client.list_agents(status="pending"), "an agent waiting for a node")
    finally:
        # Within its stop timeout: the pending agent ends now, not after its 5 minutes.
        kernel.stop_checked()
        thread.join()
    # Its SPAWN failed (its caller hears of the kernel's shutdown), ended as killed.
    assert isinstance(outcome["error"], AgentOSError)
    assert "agent 'waiting' was killed while it waited for a node" in kernel.log()
    until(lambda: gone(spawned["pid"]), "the agent's process gone")
    until(lambda: gone(spawned["isolation"]["node"]["actor_pid"]), "its AgentHost actor's process gone")
