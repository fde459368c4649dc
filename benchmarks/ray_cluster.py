"""What the Ray benchmarks share: a two-node cluster on loopback only, torn down with its files,
and the percentiles they report."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import percentile

MiB = 1024 * 1024
#: Ray's object store per node: explicit, or Ray sizes it from the whole box.
OBJECT_STORE = 100 * MiB


@contextlib.contextmanager
def loopback_cluster(head: dict[str, Any], worker: dict[str, Any]) -> Iterator[tuple[Any, Path]]:
    """A ``ray.cluster_utils.Cluster``: a head with ``head``'s arguments and one worker node with
    ``worker``'s, with a token of its own; and a scratch directory. Refuses to run where Ray could
    bind more than loopback (outside a network namespace of its own, Ray binds the machine's
    routable address)."""
    if sorted(name for _, name in socket.if_nameindex()) != ["lo"]:
        sys.exit("run me in a loopback-only network namespace: unshare --net sh -c 'ip link set lo up && ...'")
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    token = work / "token"
    token.write_text(secrets.token_hex(16))
    token.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    cluster = Cluster(initialize_head=True, head_node_args={**head, "object_store_memory": OBJECT_STORE})
    try:
        cluster.add_node(**worker, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        yield cluster, work
    finally:
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def ms(samples: list[float]) -> dict[str, float]:
    """p50 and p90 of ``samples`` (seconds), in milliseconds."""
    return {"p50_ms": round(statistics.median(samples) * 1e3, 3), "p90_ms": round(percentile(samples, 0.9) * 1e3, 3)}
