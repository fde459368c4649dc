"""Agents on a Ray cluster vs on the kernel's machine, in the same run (docs/cluster.md).

usage (root; Ray must see only loopback, so in a network namespace of its own):
    unshare --net sh -c 'ip link set lo up && .venv/bin/python benchmarks/bench_cluster.py'

It starts a two-node ``ray.cluster_utils.Cluster`` (a head labelled ``pool=gateway`` and a worker
labelled ``pool=agents``), a fake Gemini and two kernels driving the cluster, one per way of
hosting placed agents (``cluster.hosts``: ``node``, one ``NodeHost`` actor per node for all its
agents; ``agent``, an ``AgentHost`` actor each), then measures:

- spawn-to-ready of a sandboxed agent on the worker node (SPAWN with ``placement``, then WAIT
  until READY: its reservation or actor, the sandbox, the agent's import and READY through the
  bridge), each way, vs the same agent through the kernel's own zygote, alternated round by round;
- the latency the kernel adds to a NOOP and to a THINK: the same agent, placed each way vs
  local, p50 of one-at-a-time calls, ``RTT_ROUNDS`` rounds of ``CALLS`` each way in turn
  (goal: a THINK from a placed agent at most 2 ms slower);
- what hosting costs a node: memory (USS/PSS) and CPU time of each ``AgentHost`` and its zygote
  with ``AGENTS`` agents placed at once, vs the one ``NodeHost`` running the same agents;
- density, node mode: ``DENSITY`` (200) agents placed across the two nodes at once (half asking
  for each node's label): time until all are ready, memory per agent (its cgroup's, read on its
  node, plus its share of the NodeHosts' USS) and each NodeHost's; then more, a batch at a time,
  until a SPAWN fails or ``DENSITY_MAX`` run: what fails first, and when.

Results are printed and written to ``.benchmarks/cluster.json``. Numbers from a busy 2-core
machine are noisy; compare the columns of one run.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray_cluster import MiB, loopback_cluster, ms

HERE = Path(__file__).resolve().parent
AGENT = str(HERE / "cluster_agent.py")
SPAWNS = int(os.environ.get("SPAWNS", "15"))
CALLS = int(os.environ.get("CALLS", "300"))
RTT_ROUNDS = int(os.environ.get("RTT_ROUNDS", "3"))
AGENTS = int(os.environ.get("AGENTS", "10"))
DENSITY = int(os.environ.get("DENSITY", "200"))
DENSITY_MAX = int(os.environ.get("DENSITY_MAX", "600"))
#: Each agent of the density run: small, so that the box's memory is not what stops it first.
DENSITY_LIMITS = {"memory": "64Mi", "pids": 16}
WORKER = {"labels": {"pool": "agents"}}
HEAD = {"labels": {"pool": "gateway"}}


def smaps(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return {"uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"], "rss": fields["Rss"]}


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def spawn_to_ready(ways: dict[str, tuple[Any, dict[str, Any] | None]]) -> dict[str, list[float]]:
    """Each way's spawn-to-ready, one way after the other within each round."""
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for i in range(SPAWNS):
        for way, (client, placement) in ways.items():
            name = f"r{i}-{way}"
            started = time.perf_counter()
            client.spawn(name, AGENT, args=["ready"], placement=placement)
            client.wait(name, until="ready", timeout=120)
            samples[way].append(time.perf_counter() - started)
            client.kill(name, grace=2)
    return samples


def round_trips(client: Any, name: str, placement: dict[str, Any] | None) -> dict[str, list[float]]:
    client.spawn(name, AGENT, args=["rtt", str(CALLS)], placement=placement)
    ended = client.wait(name, timeout=600)
    log = client.logs(name)
    assert ended["status"] == "exited", log
    return json.loads(log.strip().splitlines()[-1])


def mean_mib(rows: list[dict[str, int]], key: str) -> float:
    return round(statistics.mean(r[key] for r in rows) / MiB, 1) if rows else 0.0


def hosting_costs(client: Any) -> dict[str, Any]:
    """``AGENTS`` agents placed on the worker at once: each host process (one per agent, or the
    node's one) and the zygotes under it, per agent."""
    spawned = [client.spawn(f"cost{i}", AGENT, args=["ready"], placement=WORKER) for i in range(AGENTS)]
    for agent in spawned:
        client.wait(agent["name"], until="ready", timeout=120)
    time.sleep(1)  # past the start's bursts: steady state
    agents = {agent["pid"] for agent in spawned}
    hosts = sorted({agent["isolation"]["node"]["actor_pid"] for agent in spawned})
    actors, zygotes, cpu = [], [], []
    for actor in hosts:
        actors.append(smaps(actor))
        zygote = [c for c in children(actor) if c not in agents]
        zygotes += [smaps(z) for z in zygote]
        cpu.append(cpu_seconds(actor) + sum(cpu_seconds(z) for z in zygote))
    for agent in spawned:
        client.kill(agent["name"], grace=2)
    uss = sum(r["uss"] for r in actors + zygotes)
    pss = sum(r["pss"] for r in actors + zygotes)
    return {"agents": AGENTS, "hosts": len(hosts), "host_uss_mib": mean_mib(actors, "uss"),
            "host_pss_mib": mean_mib(actors, "pss"), "host_rss_mib": mean_mib(actors, "rss"),
            "zygote_uss_mib": mean_mib(zygotes, "uss"), "zygotes": len(zygotes),
            "uss_per_agent_mib": round(uss / AGENTS / MiB, 2), "pss_per_agent_mib": round(pss / AGENTS / MiB, 2),
            "cpu_s_per_agent": round(sum(cpu) / AGENTS, 3)}


def density(kernel: Any) -> dict[str, Any]:
    """``DENSITY`` agents across the two nodes at once, then batches until one fails."""
    def spawn(i: int) -> dict[str, Any]:
        placement = {**(WORKER if i % 2 else HEAD), "timeout": "10s"}
        with kernel.client(timeout=600) as client:
            return dict(client.spawn(f"d{i}", AGENT, args=["ready"], placement=placement, limits=DENSITY_LIMITS))

    def ready(agent: dict[str, Any]) -> None:
        with kernel.client(timeout=600) as client:
            client.wait(agent["name"], until="ready", timeout=300)

    def kill(agent: dict[str, Any]) -> None:
        with kernel.client(timeout=600) as client:
            client.kill(agent["name"], grace=0)

    results: dict[str, Any] = {"agents": DENSITY, "limits": DENSITY_LIMITS}
    spawned: list[dict[str, Any]] = []
    with ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        spawned += pool.map(spawn, range(DENSITY))
        list(pool.map(ready, spawned))
        results["all_ready_s"] = round(time.perf_counter() - started, 2)
        time.sleep(2)  # past the start's bursts: steady state
        with kernel.client(timeout=600) as client:
            # Each agent's cgroup, read on its node: the agent's own memory (its processes, /tmp).
            usage = [a["usage"]["memory_current"] for a in client.list_agents(status="running")]
        results["agent_cgroup_mib"] = {"mean": round(statistics.mean(usage) / MiB, 2),
                                       "max": round(max(usage) / MiB, 2)}
        hosts = {agent["isolation"]["node"]["id"][:8]: agent["isolation"]["node"]["actor_pid"] for agent in spawned}
        results["node_hosts"] = {node: {**{k: round(v / MiB, 1) for k, v in smaps(pid).items()},
                                        "agents": sum(a["isolation"]["node"]["actor_pid"] == pid for a in spawned)}
                                 for node, pid in hosts.items()}
        shared = sum(host["uss"] for host in results["node_hosts"].values()) / DENSITY
        results["mib_per_agent"] = round(results["agent_cgroup_mib"]["mean"] + shared, 2)
        print("density", results, flush=True)
        while len(spawned) < DENSITY_MAX:
            batch = range(len(spawned), min(DENSITY_MAX, len(spawned) + 50))
            outcomes = list(pool.map(lambda i: _attempt(spawn, i), batch))
            spawned += [o for o in outcomes if isinstance(o, dict)]
            failed = [o for o in outcomes if not isinstance(o, dict)]
            if failed:
                results["first_failure"] = {"live": len(spawned), "error": failed[0][:400]}
                break
        results["most_live"] = len(spawned)
        list(pool.map(kill, spawned))
    return results


def _attempt(spawn: Any, i: int) -> dict[str, Any] | str:
    try:
        return dict(spawn(i))
    except Exception as exc:  # what fails first is the figure
        return f"{type(exc).__name__}: {exc}"


def start_kernel(work: Path, cluster: Any, fake: Any, hosts: str) -> Any:
    from agentos.testing.kernel import KernelProcess

    root = work / hosts
    root.mkdir()
    manifest = root / "cluster.yaml"
    manifest.write_text(json.dumps({"kernel": {"cluster": {"hosts": hosts}},
                                    "agents": {"unused": {"script": AGENT}}}))
    return KernelProcess(root / "k", args=["--cluster", str(cluster.address), "--manifest", str(manifest)], env={
        "AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
        "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": ""}).start()


def main() -> None:
    from agentos.testing import FakeGemini

    results: dict[str, Any] = {}
    kernels: list[Any] = []
    with loopback_cluster({"num_cpus": 1, "resources": {"llm_gateway": 1}, "labels": {"pool": "gateway"}},
                          {"num_cpus": 2, "resources": {"agent_slots": 64}, "labels": {"pool": "agents"}}) \
            as (cluster, work), FakeGemini().running_in_thread() as fake:
        try:
            node, agent = (start_kernel(work, cluster, fake, hosts) for hosts in ("node", "agent"))
            kernels += [node, agent]
            with node.client(timeout=600) as on_node, agent.client(timeout=600) as on_agent:
                ways = {"node": (on_node, WORKER), "agent": (on_agent, WORKER), "local": (on_node, None)}
                spawns = spawn_to_ready(ways)
                results["spawn_to_ready"] = {way: ms(samples) for way, samples in spawns.items()}
                print("spawn-to-ready", results["spawn_to_ready"], flush=True)
                # Rounds of each way in turn, pooled: the box's other work hits all alike.
                trips: dict[str, dict[str, list[float]]] = {way: {"noop": [], "think": []} for way in ways}
                for r in range(RTT_ROUNDS):
                    for way, (client, placement) in ways.items():
                        for call, samples in round_trips(client, f"rtt-{way}-{r}", placement).items():
                            trips[way][call] += samples
                for call in ("noop", "think"):
                    local = statistics.median(trips["local"][call])
                    results[call] = {way: ms(trips[way][call]) for way in ways}
                    for way in ("node", "agent"):
                        results[call][f"added_p50_ms_{way}"] = round(
                            (statistics.median(trips[way][call]) - local) * 1e3, 3)
                    print(call, results[call], flush=True)
                results["think"]["goal_added_p50_ms"] = 2.0
                results["hosting"] = {"agent": hosting_costs(on_agent), "node": hosting_costs(on_node)}
                print("hosting", results["hosting"], flush=True)
            results["density"] = density(node)
            print("density", results["density"], flush=True)
        finally:
            for kernel in kernels:
                kernel.stop_checked()
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
