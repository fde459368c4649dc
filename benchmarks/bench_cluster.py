"""Agents on a Ray cluster vs on the kernel's machine, in the same run (docs/cluster.md).

usage (root; Ray must see only loopback, so in a network namespace of its own):
    unshare --net sh -c 'ip link set lo up && .venv/bin/python benchmarks/bench_cluster.py'

It starts a two-node ``ray.cluster_utils.Cluster`` (head and a worker labelled ``pool=agents``),
a fake Gemini and a kernel driving the cluster, then measures:

- spawn-to-ready of a sandboxed agent on the worker node (SPAWN with ``placement``, then WAIT
  until READY: the actor's creation, its zygote, the sandbox, the agent's import and READY
  through the bridge) vs the same agent through the kernel's own zygote;
- the latency the kernel adds to a NOOP and to a THINK: the same agent, placed vs local, p50 of
  one-at-a-time calls (goal: a THINK from a placed agent at most 2 ms slower);
- what each agent's AgentHost costs on its node: memory (USS/PSS of the actor process and of
  its zygote) and CPU time, with ``AGENTS`` agents placed at once.

Results are printed and written to ``.benchmarks/cluster.json``. Numbers from a busy 2-core
machine are noisy; compare the two columns of one run.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
AGENT = str(HERE / "cluster_agent.py")
SPAWNS = int(os.environ.get("SPAWNS", "15"))
CALLS = int(os.environ.get("CALLS", "300"))
AGENTS = int(os.environ.get("AGENTS", "10"))
WORKER = {"labels": {"pool": "agents"}}
MiB = 1024 * 1024


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(samples) * 1e3, 3), "p90_ms": round(p(samples, 0.9) * 1e3, 3)}


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


def spawn_to_ready(client: Any, placement: dict[str, Any] | None) -> list[float]:
    samples = []
    for i in range(SPAWNS):
        name = f"r{i}{'p' if placement else 'l'}"
        started = time.perf_counter()
        client.spawn(name, AGENT, args=["ready"], placement=placement)
        client.wait(name, until="ready", timeout=120)
        samples.append(time.perf_counter() - started)
        client.kill(name, grace=2)
    return samples


def round_trips(client: Any, placement: dict[str, Any] | None) -> dict[str, list[float]]:
    name = "rtt-placed" if placement else "rtt-local"
    client.spawn(name, AGENT, args=["rtt", str(CALLS)], placement=placement)
    ended = client.wait(name, timeout=600)
    log = client.logs(name)
    assert ended["status"] == "exited", log
    return json.loads(log.strip().splitlines()[-1])


def host_costs(client: Any) -> dict[str, Any]:
    spawned = [client.spawn(f"cost{i}", AGENT, args=["ready"], placement=WORKER) for i in range(AGENTS)]
    for agent in spawned:
        client.wait(agent["name"], until="ready", timeout=120)
    time.sleep(1)  # past the start's bursts: steady state
    actors, zygotes, cpu = [], [], []
    for agent in spawned:
        actor = agent["isolation"]["node"]["actor_pid"]
        actors.append(smaps(actor))
        zygote = [c for c in children(actor) if c != agent["pid"]]
        zygotes += [smaps(z) for z in zygote]
        cpu.append(cpu_seconds(actor) + sum(cpu_seconds(z) for z in zygote))
    for agent in spawned:
        client.kill(agent["name"], grace=2)

    def mean(rows: list[dict[str, int]], key: str) -> float:
        return round(statistics.mean(r[key] for r in rows) / MiB, 1) if rows else 0.0

    return {"agents": AGENTS, "actor_uss_mib": mean(actors, "uss"), "actor_pss_mib": mean(actors, "pss"),
            "actor_rss_mib": mean(actors, "rss"), "zygote_uss_mib": mean(zygotes, "uss"),
            "zygote_pss_mib": mean(zygotes, "pss"), "zygotes_per_host": round(len(zygotes) / AGENTS, 2),
            "cpu_s_per_host": round(statistics.mean(cpu), 2)}


def main() -> None:
    if sorted(name for _, name in socket.if_nameindex()) != ["lo"]:
        sys.exit("run me in a loopback-only network namespace: unshare --net sh -c 'ip link set lo up && ...'")
    from ray.cluster_utils import Cluster

    from agentos.testing import FakeGemini
    from agentos.testing.kernel import KernelProcess

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    token = work / "token"
    token.write_text(secrets.token_hex(16))
    token.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"llm_gateway": 1}, "object_store_memory": 100 * MiB})
    results: dict[str, Any] = {}
    try:
        cluster.add_node(num_cpus=2, resources={"agent_slots": 64}, labels={"pool": "agents"},
                         object_store_memory=100 * MiB)
        cluster.wait_for_nodes()
        with FakeGemini().running_in_thread() as fake:
            kernel = KernelProcess(work / "k", args=["--cluster", str(cluster.address)], env={
                "AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
                "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": ""}).start()
            try:
                with kernel.client(timeout=600) as client:
                    placed, local = spawn_to_ready(client, WORKER), spawn_to_ready(client, None)
                    results["spawn_to_ready"] = {"placed": ms(placed), "local": ms(local)}
                    print("spawn-to-ready  placed", ms(placed), " local", ms(local), flush=True)
                    remote, here = round_trips(client, WORKER), round_trips(client, None)
                    for call in ("noop", "think"):
                        added = statistics.median(remote[call]) - statistics.median(here[call])
                        results[call] = {"placed": ms(remote[call]), "local": ms(here[call]),
                                         "added_p50_ms": round(added * 1e3, 3)}
                        print(f"{call:6}  placed {ms(remote[call])}  local {ms(here[call])}  "
                              f"added p50 {added * 1e3:.3f} ms", flush=True)
                    results["think"]["goal_added_p50_ms"] = 2.0
                    results["host"] = host_costs(client)
                    print("per AgentHost", results["host"], flush=True)
            finally:
                kernel.stop_checked()
    finally:
        cluster.shutdown()
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
