"""A two-node Ray cluster for the session (head: the kernel's node, with ``llm_gateway``; a worker
labelled ``pool=agents`` with ``agent_slots``), and kernels that drive it against a fake Gemini.

Ray binds the host's routable address unless the machine has no other: these tests run only in
a loopback-only network namespace (``.ci/run``'s ray stage: ``unshare --net``), and fail
elsewhere rather than open Ray's ports on a shared machine's network.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

AGENTS = Path(__file__).parent / "agents"
MiB = 1024 * 1024


def agent(name: str) -> str:
    return str(AGENTS / f"{name}.py")


@dataclass
class RayCluster:
    cluster: Any
    head: Any
    worker: Any

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, **options: Any) -> Any:
        return self.cluster.add_node(object_store_memory=100 * MiB, num_cpus=1, **options)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(f"the ray tests run in a loopback-only network namespace (unshare --net), not with "
                    f"interfaces {interfaces}: see .ci/run's ray stage")
    from ray.cluster_utils import Cluster

    token = tmp_path_factory.mktemp("ray") / "token"
    token.write_text(secrets.token_hex(16))
    token.chmod(0o600)
    # Read by every Ray process the cluster starts, and by the kernels (children of this one).
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    # The cluster's sessions (logs, sockets) in a directory of its own, removed with it; a short
    # path, as Ray's socket paths are made under it.
    temp = tempfile.mkdtemp(prefix="agentos-ray-")
    os.environ["RAY_TMPDIR"] = temp
    # Without the autoscaler's monitor, the log monitor and the dashboard's modules: nothing here
    # reads them (the kernels drive Ray with log_to_driver off), and each costs a small machine a
    # Python process importing Ray.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"llm_gateway": 1}, "object_store_memory": 100 * MiB,
        "labels": {"pool": "gateway"}, "no_monitor": True, "include_log_monitor": False,
        "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=2, resources={"agent_slots": 8}, labels={"pool": "agents"},
                                  object_store_memory=100 * MiB)
        cluster.wait_for_nodes()
        yield RayCluster(cluster, cluster.head_node, worker)
    finally:
        # Only the nodes this session started (never `ray stop`: other clusters may share the machine).
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini().running_in_thread() as f:
        yield f


@dataclass
class Kernels:
    """The kernels ``ray_kernel`` started this session (every one, to check each as it stops at
    the session's end), and the one now serving each ``cluster.hosts`` mode."""

    started: list[KernelProcess]
    serving: dict[str, KernelProcess]


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster,
            fake: FakeGemini) -> Iterator[Kernels]:
    found = Kernels([], {})
    yield found
    for k in found.started:
        k.stop_checked()


@pytest.fixture(params=["node", "agent"])
def hosts(request: pytest.FixtureRequest) -> str:
    """How the kernel hosts its placed agents (``cluster.hosts``): every ray test runs both ways."""
    return str(request.param)


@pytest.fixture
def ray_kernel(kernels: Kernels, hosts: str, tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster,
               fake: FakeGemini) -> Iterator[KernelProcess]:
    """A kernel driving the session's cluster with ``hosts``, its LLM gateway on the fake Gemini:
    one per mode for the session (a kernel is a Ray driver, seconds to start), started anew after
    a test stopped it. Each test ends the agents it started: one still running or waiting for a
    node after it fails the test, and is killed so that the next test starts with none."""
    k = kernels.serving.get(hosts)
    if k is None or k.proc is None or k.proc.poll() is not None:
        root = tmp_path_factory.mktemp("kernel")
        # The mode is the manifest's (kernel.cluster.hosts); a manifest declares an agent, unused here.
        manifest = root / "cluster.yaml"
        manifest.write_text(json.dumps({"kernel": {"cluster": {"hosts": hosts}},
                                        "agents": {"unused": {"script": agent("sleeper")}}}))
        k = kernels.serving[hosts] = KernelProcess(root, args=[
            "--cluster", ray_cluster.address, "--manifest", str(manifest)], env={
            "AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
            "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": ""}).start()
        kernels.started.append(k)
    yield k
    if k.proc is not None and k.proc.poll() is None:
        with k.client() as client:
            left = client.list_agents(status=["running", "pending"])
            for row in left:
                client.kill(id=row["id"], grace=0)
        assert not left, f"the test left agents behind: {[(row['name'], row['status']) for row in left]}"
