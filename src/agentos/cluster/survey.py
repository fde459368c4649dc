"""``agentos doctor --cluster``: what each node of a Ray cluster lets the sandbox do, and Ray's
own view of the cluster.

``isolation()`` runs on a node, in a tiny Ray task pinned there: the same probes as ``agentos
doctor`` makes on one host (namespaces, seccomp, Landlock, a trial of its cgroups), so what a
placed agent gets on that node is reported before any agent runs there. ``survey()`` is the
doctor's side: a short-lived Ray driver that runs it once on every alive node.
"""
from __future__ import annotations

import os
import platform
import socket
from typing import Any

import ray
from ray._private.state import available_resources_per_node
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .. import __version__
from . import NAMESPACE

#: How long one node may take to answer (a Ray worker process started for it, a few forks).
NODE_TIMEOUT = 60.0


def isolation() -> dict[str, Any]:
    """This node's isolation report (run on the node, as the Ray worker's user)."""
    from ..cgroups.trial import trial
    from ..sandbox.probe import probe

    return {"sandbox": probe().as_dict(), "cgroups": trial().as_dict(), "agentos": __version__,
            "python": platform.python_version(), "ray": ray.__version__, "hostname": socket.gethostname(),
            "uid": os.geteuid(), "kernel": platform.release()}


def survey(address: str, timeout: float = NODE_TIMEOUT) -> dict[str, Any]:
    """Connect to the cluster at ``address`` as a driver of its own, ask every alive node for its
    ``isolation()``, and describe the cluster as Ray sees it. Raises ``ConnectionError`` when
    Ray cannot be reached."""
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(isolation)
        nodes = ray.nodes()
        available = available_resources_per_node()
        alive = [node for node in nodes if node["Alive"]]
        # Each task pinned to its node (not soft: a report from elsewhere would be a lie).
        asked = {node["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote() for node in alive}
        ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout)
        answered = {ref.hex() for ref in ready}
        reports = []
        for node in nodes:
            node_id = node["NodeID"]
            report: dict[str, Any] = {
                "id": node_id, "alive": node["Alive"], "ip": node["NodeManagerAddress"],
                "hostname": node.get("NodeManagerHostname"),
                "labels": {k: v for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")},
                "resources": node["Resources"], "available": available.get(node_id, {})}
            ref = asked.get(node_id)
            if ref is None:
                pass  # a dead node: Ray still lists it, nothing runs there
            elif ref.hex() not in answered:
                report["error"] = f"did not answer within {timeout:g}s"
                ray.cancel(ref, force=True)
            else:
                try:
                    report["isolation"] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    report["error"] = str(exc).strip().splitlines()[-1]
            reports.append(report)
        return {"address": address, "ray": ray.__version__, "python": platform.python_version(),
                "agentos": __version__, "resources": ray.cluster_resources(),
                "available": ray.available_resources(), "nodes": reports}
    finally:
        ray.shutdown()
