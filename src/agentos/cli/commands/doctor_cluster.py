"""``agentos doctor --cluster``: each Ray node's isolation (the same report as on one host, made on
that node by a tiny Ray task) and Ray's own view of the cluster."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import __version__
from ...cgroups.trial import Trial
from ...sandbox.probe import HostSupport
from .doctor import Report, cgroups_line, sandbox_lines

#: Where a node that lacks what the sandbox needs learns what to give it.
_NODE_ADVICE = ("A node needs what a host needs: root (or user namespaces), seccomp, Landlock and a writable "
                "cgroup hierarchy; in a KubeRay pod, a privileged one or SYS_ADMIN with /sys/fs/cgroup "
                "mounted read-write (docs/cluster.md, KubeRay).")


def check_cluster(report: Report, address: str, hello: dict[str, Any] | None) -> None:
    """Survey the cluster at ``address`` ("": the running kernel's, else ``auto``) and report it."""
    source = "as given"
    if not address:
        kernel = (hello or {}).get("capabilities", {}).get("cluster", {}).get("address")
        address, source = (kernel, "the running kernel's") if kernel else ("auto", "no kernel drives one: auto")
    try:
        from ...cluster.survey import survey
    except ImportError as exc:
        report.line("FAIL", "cluster", f"needs Ray ({exc}): pip install 'agentos[ray]'")
        return
    try:
        found = survey(address)
    except ConnectionError as exc:
        report.line("FAIL", "cluster", str(exc), address=address)
        return
    nodes = found["nodes"]
    alive = [node for node in nodes if node["alive"]]
    dead = len(nodes) - len(alive)
    report.line("ok" if alive else "FAIL", "ray",
                f"Ray {found['ray']} at {address} ({source}): {len(alive)} node(s) alive"
                + (f", {dead} dead" if dead else "") + f"; {_amounts(found['resources'], found['available'])}",
                address=address, ray=found["ray"], resources=found["resources"], available=found["available"])
    for node in nodes:
        _node(report, node)


def _node(report: Report, node: dict[str, Any]) -> None:
    where = {"node": node["id"]}
    labels = ", ".join(f"{k}={v}" for k, v in sorted(node["labels"].items())) or "none"
    facts = (f"{node['hostname']} ({node['ip']}), labels {labels}; "
             f"{_amounts(node['resources'], node['available'])}")
    data = {**where, "labels": node["labels"], "resources": node["resources"], "available": node["available"]}
    if not node["alive"]:
        report.line("info", "host", f"dead (Ray still lists it): {facts}", **data)
        return
    isolation = node.get("isolation")
    if isolation is None:
        report.line("FAIL", "host", f"{facts}; no isolation report from it: {node['error']} (is agentos "
                    "installed there, as on this machine?)", **data)
        return
    report.line("ok", "host", f"{facts}; agentos {isolation['agentos']}, Python {isolation['python']}, Linux "
                f"{isolation['kernel']}, its Ray worker runs as uid {isolation['uid']}", **data, isolation=isolation)
    if isolation["agentos"] != __version__:
        report.line("warn", "agentos version", f"{isolation['agentos']} there, {__version__} here: give every "
                    "node the kernel's agentos (one image)", **where)
    runner = "its Ray worker"
    # Only the fields this agentos knows (a node with another version may report more).
    support = HostSupport(**{k: v for k, v in isolation["sandbox"].items() if k in HostSupport.__dataclass_fields__})
    sandbox_lines(report, support, runner, **where)
    cgroups_line(report, f"a host actor here (uid {isolation['uid']})", Trial.from_dict(isolation["cgroups"]),
                 lambda: _NODE_ADVICE, **where)


def _amounts(total: Mapping[str, float], free: Mapping[str, float]) -> str:
    """``CPU 2 (1 free), memory 22.5Gi (22.5Gi free), agent_slots 8 (8 free)``: Ray's own ``node:``
    markers left out."""
    def amount(name: str, value: float) -> str:
        return f"{value / 2**30:.1f}Gi" if name in ("memory", "object_store_memory") else f"{value:g}"

    return ", ".join(f"{name} {amount(name, value)} ({amount(name, free.get(name, 0))} free)"
                     for name, value in sorted(total.items()) if not name.startswith("node:"))
