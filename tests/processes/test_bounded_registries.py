"""Nothing the kernel keeps per agent grows with the agents that ever lived: after hundreds of
agents came and went (some with children, mail and egress lists), every per-agent registry of
every service holds at most the running agents plus ``processes.keep_ended`` ended ones, as the
admin-only LIST ``include: ["registries"]`` reports them."""
from __future__ import annotations

import time
from typing import Any

from agentos import Client, PermissionDenied
from agentos.protocol import Op
from tests.permissions.identities import NOBODY, configured_kernel, run_as
from tests.processes.conftest import agent

KEEP = 16
CHURN = 300
PARENTS = 6


def _registries(client: Client) -> dict[str, dict[str, int]]:
    reply: dict[str, Any] = client._call(Op.LIST, {"include": ["registries"], "limit": 1})  # noqa: SLF001
    return reply["registries"]


def test_every_per_agent_registry_stays_within_the_retention() -> None:
    sections = {"processes": {"keep_ended": KEEP},
                "permissions": {"uids": {str(NOBODY): ["observe", "spawn"]}}}
    with configured_kernel(sections, world_reachable=True) as kernel, \
            Client(kernel.socket_path, timeout=60) as client:
        keeper = client.spawn("keeper", command=["sleep", "600"], sandboxed=False)
        for n in range(CHURN):
            info = client.spawn(f"churn{n}", command=["true"], sandboxed=False)
            client.send(info["id"], {"n": n})  # by id: messaging resolves and remembers it
            client.wait(id=info["id"], timeout=60)
        for n in range(PARENTS):
            # A parent and its sandboxed child: lineage in permissions, two ends per tree.
            parent = client.spawn(f"parent{n}", agent("spawner"), sandboxed=False)
            client.wait(id=parent["id"], until="ready", timeout=60)
            client.kill(id=parent["id"], grace=0)
        while [a for a in client.list_agents(status="running") if a["id"] != keeper["id"]]:
            time.sleep(0.05)  # the children end after their parents
        ended = client.list_agents(status=["exited", "failed", "killed"])
        assert len(ended) == KEEP
        sizes = _registries(client)
        assert set(sizes) >= {"processes", "permissions", "messaging", "egress", "llm"}
        bound = KEEP + 1  # the ended ones kept, and the keeper
        over = {f"{service}.{name}": size for service, counts in sizes.items()
                for name, size in counts.items() if size > bound}
        assert not over, f"registries past running + keep_ended ({bound}): {over}"
        assert sizes["processes"]["agents"] == bound and sizes["permissions"]["agents"] == bound
        assert sizes["llm"]["callers"] == bound  # it learns every agent's name as it starts

        refused = run_as(NOBODY, kernel.socket_path, _registries)
        assert refused["error"] == PermissionDenied.__name__, refused
        assert "include" in refused["message"]
        client.kill(id=keeper["id"], grace=0)
