"""cgroup v1 driver: one hierarchy per controller (some may be co-mounted)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from .base import (
    LEAF,
    TOP,
    AgentCgroup,
    CgroupDriver,
    CgroupError,
    CgroupStats,
    log,
    read_int,
    read_keyed,
    read_procs,
    read_text,
    rmdir,
    signal_all,
    write,
)
from .limits import Limits, cpu_quota_us, pids_max

#: Hierarchies used besides the limit controllers: CPU time accounting and tree freezing.
_USED = ("memory", "pids", "cpu", "cpuacct", "freezer")


class V1Cgroup(AgentCgroup):
    """An agent's directories, one per v1 hierarchy in use, each with its ``self`` leaf but the
    memory hierarchy's, whose directory holds the agent's processes itself (v1 allows processes
    in an inner cgroup): one memory cgroup per agent, and each costs the host a shrinker map."""

    def __init__(self, agent_id: str, by_controller: dict[str, str],
                 parent: AgentCgroup | None = None) -> None:
        # Strings, not Paths: LIST reads six files per agent, and pathlib's joins cost as much
        # as the reads; co-mounted controllers share one string (memory per live agent).
        first: dict[str, str] = {}
        for directory in by_controller.values():
            first.setdefault(directory, directory)
        self._memory = by_controller.get("memory")
        super().__init__(agent_id, list(first), {}, parent,
                         [directory if directory == self._memory else f"{directory}/{LEAF}"
                          for directory in first])
        #: Controller -> the agent's directory in that controller's hierarchy.
        self._by_controller = {ctl: first[directory] for ctl, directory in by_controller.items()}

    @property
    def by_controller(self) -> dict[str, Path]:
        """Controller -> the agent's directory in that controller's hierarchy."""
        return {ctl: Path(directory) for ctl, directory in self._by_controller.items()}

    def _file(self, controller: str, name: str, leaf: bool = True) -> str | None:
        """A control file of the agent's own processes (``leaf``) or of its whole directory."""
        directory = self._by_controller.get(controller)
        if directory is None:
            return None
        # The memory hierarchy keeps the agent's processes in its directory, the others in a leaf.
        return f"{directory}/{LEAF}/{name}" if leaf and directory != self._memory else f"{directory}/{name}"

    def _int(self, controller: str, name: str, leaf: bool = True) -> int | None:
        path = self._file(controller, name, leaf)
        return read_int(path) if path else None

    def stats(self) -> CgroupStats:
        # Throttling is counted where the quota is written: the agent's directory.
        cpu_stat_path = self._file("cpu", "cpu.stat", leaf=False)
        cpu = read_keyed(cpu_stat_path) if cpu_stat_path else {}
        usage_ns = self._int("cpuacct", "cpuacct.usage")
        throttled_ns = cpu.get("throttled_time")
        return CgroupStats(
            memory_current=self._own_memory(),
            # Its children's pages count in its peak too, and v1 keeps no peak of its own.
            memory_peak=None if self.nested else self._int("memory", "memory.max_usage_in_bytes"),
            cpu_usage_usec=None if usage_ns is None else usage_ns // 1000,
            cpu_nr_periods=cpu.get("nr_periods"),
            cpu_nr_throttled=cpu.get("nr_throttled"),
            cpu_throttled_usec=None if throttled_ns is None else throttled_ns // 1000,
            pids_current=self._int("pids", "pids.current"),
            oom_kills=self._oom_kills(),
        )

    def _own_memory(self) -> int | None:
        usage = self._int("memory", "memory.usage_in_bytes")
        if usage is None or not self._children:
            return usage
        # The agent's directory counts its child agents' pages too (use_hierarchy): take them off.
        # A copy first (one C call, whole under the GIL): this runs in a teardown or LIST thread
        # while the loop adds and drops children.
        children = [child._int("memory", "memory.usage_in_bytes") or 0
                    for child in list(self._children) if isinstance(child, V1Cgroup)]
        return max(0, usage - sum(children))

    def _oom_kills(self) -> int | None:
        path = self._file("memory", "memory.oom_control")
        if path is None:
            return None
        control = read_keyed(path)
        if "oom_kill" in control:
            # Counted in the victim's own cgroup only (v1 does not add it up the tree), whichever
            # ancestor's limit was hit.
            return control["oom_kill"]
        # Kernels before 4.13 have no counter; the agent's limit being hit is the best sign left.
        failcnt = self._int("memory", "memory.failcnt", leaf=False)
        return None if failcnt is None else int(failcnt > 0)

    def oom_kills(self) -> int:
        return self._oom_kills() or 0

    def freeze(self) -> None:
        write(self._freezer_state(), "FROZEN")

    def thaw(self) -> None:
        write(self._freezer_state(), "THAWED")

    def frozen(self) -> bool:
        # FREEZING is transient: a task that could not stop yet (in a vfork, in D state).
        text = read_text(self._freezer_state())
        return text is None or text.strip() == "FROZEN"

    def remove(self) -> bool:
        # A kernel before one memory cgroup per agent made a leaf there too (a dead one's subtree).
        if self._memory is not None and not rmdir(f"{self._memory}/{LEAF}"):
            return False
        return super().remove()

    def _freezer_state(self) -> str:
        path = self._file("freezer", "freezer.state")
        if path is None:
            raise CgroupError(errno.EOPNOTSUPP, "the v1 freezer hierarchy is not mounted")
        return path

    def _kill_leaf(self) -> int:
        freezer = self._file("freezer", "freezer.state")
        if freezer is None:
            return signal_all(read_procs(self._leaves))
        # Frozen tasks cannot fork, so one pass sees the whole tree; SIGKILL lands on thaw.
        try:
            write(freezer, "FROZEN")
        except OSError as exc:
            log.warning("cannot freeze %s (%s): killing without it", os.path.dirname(freezer), exc)
            return signal_all(read_procs(self._leaves))
        try:
            return signal_all(read_procs(self._leaves))
        finally:
            write(freezer, "THAWED")


class V1Driver(CgroupDriver):
    """Agents under ``<hierarchy>/agentos/<instance>/`` in each v1 hierarchy in use."""

    name = "v1"
    cgroup_type = V1Cgroup
    adopts = True

    def __init__(self, mounts: dict[str, Path], instance: str | None = None) -> None:
        self.mounts = {ctl: path for ctl, path in mounts.items() if ctl in _USED}
        super().__init__(list(self.mounts.values()), instance)

    @property
    def enforceable(self) -> frozenset[str]:
        return frozenset(ctl for ctl in ("memory", "pids", "cpu") if ctl in self.mounts)

    @property
    def freezer(self) -> bool:
        return "freezer" in self.mounts

    def start(self) -> list[AgentCgroup]:
        stale = super().start()
        if "memory" in self.mounts:
            self._nest_memory(self.mounts["memory"] / TOP / self.instance)
        return stale

    @staticmethod
    def _nest_memory(instance: Path) -> None:
        """Make a parent's memory limit bound its children (always so since Linux 5.11).

        Settable only while the instance has no children, that is now.
        """
        flag = instance / "memory.use_hierarchy"
        if read_int(flag) != 0:
            return
        try:
            write(flag, "1")
        except OSError as exc:
            log.warning("cannot set %s (%s): a child agent's memory is not bounded by its "
                        "parent's limit", flag, exc)

    def _open(self, instance: str, agent_id: str, parent: AgentCgroup | None) -> V1Cgroup:
        if parent is None:
            base = {ctl: f"{root}/{TOP}/{instance}" for ctl, root in self.mounts.items()}
        else:
            assert isinstance(parent, V1Cgroup)
            base = parent._by_controller
        return V1Cgroup(agent_id, {ctl: f"{directory}/{agent_id}" for ctl, directory in base.items()}, parent)

    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        assert isinstance(cgroup, V1Cgroup)
        dirs = cgroup._by_controller
        enforced: dict[str, bool] = {}
        if limits.memory is not None:
            enforced["memory"] = "memory" in dirs
            if enforced["memory"]:
                write(f"{dirs['memory']}/memory.limit_in_bytes", str(limits.memory))
                # Without this the agent could overflow into swap; it must be >= the RAM limit.
                memsw = f"{dirs['memory']}/memory.memsw.limit_in_bytes"
                if os.path.exists(memsw):
                    write(memsw, str(limits.memory))
        if limits.pids is not None:
            enforced["pids"] = "pids" in dirs
            if enforced["pids"]:
                write(f"{dirs['pids']}/pids.max", pids_max(limits.pids))
        if limits.cpu is not None:
            enforced["cpu"] = "cpu" in dirs
            if enforced["cpu"]:
                # v1 refuses (EINVAL) a quota above an ancestor's; v2 silently takes the
                # smaller one. Writing the smaller one makes v1 behave as v2 does.
                cores = min([limits.cpu, *ancestor_cpu(cgroup)])
                # The quota alone: a new cgroup's period is already CPU_PERIOD_US (the kernel's
                # default, and limits are only written in new ones: made or spare), and each write
                # to either file walks every cpu cgroup on the host (tg_set_bandwidth's
                # __cfs_schedulable): a cost per spawn that grows with the agents alive.
                write(f"{dirs['cpu']}/cpu.cfs_quota_us", str(cpu_quota_us(cores)))
        return enforced


def ancestor_cpu(cgroup: AgentCgroup) -> list[float]:
    """The CPU limits of the agents ``cgroup`` sits in."""
    limits = []
    node = cgroup.parent
    while node is not None:
        if node.limits.cpu is not None:
            limits.append(node.limits.cpu)
        node = node.parent
    return limits

