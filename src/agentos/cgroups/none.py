"""The driver for hosts without usable cgroups: nothing is limited, and it says so."""
from __future__ import annotations

from .base import AgentCgroup, CgroupDriver, CgroupStats
from .limits import Limits


class NoCgroup(AgentCgroup):
    """Stands in for a cgroup: no directories, so no tree tracking, no counters, no limits."""

    tracks_tree = False

    def stats(self) -> CgroupStats:
        return CgroupStats()

    def oom_kills(self) -> int:
        return 0

    def _kill_leaf(self) -> int:
        return 0


class NoDriver(CgroupDriver):
    """Used when no hierarchy is mounted or this process may not create cgroups."""

    name = "none"
    cgroup_type = NoCgroup

    def __init__(self, reason: str, instance: str | None = None) -> None:
        super().__init__([], instance)
        #: Why cgroups are unavailable, shown in HELLO and in each isolation report.
        self.reason = reason

    @property
    def enforceable(self) -> frozenset[str]:
        return frozenset()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "reason": self.reason}

    def _open(self, instance: str, agent_id: str, parent: AgentCgroup | None) -> NoCgroup:
        return NoCgroup(agent_id, [], {}, parent)

    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        return {name: False for name in limits.requested()}
