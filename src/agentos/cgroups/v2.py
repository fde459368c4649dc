"""cgroup v2 driver: one unified hierarchy, limits in memory.max, pids.max, cpu.max."""
from __future__ import annotations

from pathlib import Path

from .base import (
    TOP,
    AgentCgroup,
    CgroupDriver,
    CgroupStats,
    log,
    read_int,
    read_ints,
    read_keyed,
    read_text,
    signal_all,
    write,
)
from .detect import LIMIT_CONTROLLERS
from .limits import Limits

#: cpu.max period: the kernel default, 100 ms.
CPU_PERIOD_US = 100_000


class V2Cgroup(AgentCgroup):
    """An agent's directory in the unified hierarchy."""

    @property
    def path(self) -> Path:
        return self.dirs[0]

    def stats(self) -> CgroupStats:
        cpu = read_keyed(self.path / "cpu.stat")
        return CgroupStats(
            memory_current=read_int(self.path / "memory.current"),
            memory_peak=read_int(self.path / "memory.peak"),
            cpu_usage_usec=cpu.get("usage_usec"),
            cpu_nr_periods=cpu.get("nr_periods"),
            cpu_nr_throttled=cpu.get("nr_throttled"),
            cpu_throttled_usec=cpu.get("throttled_usec"),
            pids_current=read_int(self.path / "pids.current"),
            oom_kills=read_keyed(self.path / "memory.events").get("oom_kill"),
        )

    def oom_killed(self) -> bool:
        return read_keyed(self.path / "memory.events").get("oom_kill", 0) > 0

    def kill(self) -> int:
        pids = read_ints(self.path / "cgroup.procs")
        if (self.path / "cgroup.kill").exists():
            # Linux >= 5.14 kills the whole subtree atomically, forks in flight included.
            write(self.path / "cgroup.kill", "1")
            return len(pids)
        return signal_all(pids)


class V2Driver(CgroupDriver):
    """Agents under ``<mount>/agentos/<instance>/``, controllers delegated down to them."""

    name = "v2"

    def __init__(self, mount: Path, controllers: frozenset[str], instance: str | None = None) -> None:
        super().__init__([mount], instance)
        self.mount = mount
        #: Controllers the hierarchy offers; ``start()`` narrows this to what it could delegate.
        self._controllers = frozenset(controllers) & set(LIMIT_CONTROLLERS.values())

    @property
    def enforceable(self) -> frozenset[str]:
        return frozenset(limit for limit, ctl in LIMIT_CONTROLLERS.items() if ctl in self._controllers)

    def start(self) -> list[AgentCgroup]:
        stale = super().start()
        # A controller reaches an agent only if every ancestor below the mount enables it.
        for directory in (self.mount, self.mount / TOP, self.mount / TOP / self.instance):
            self._controllers = self._delegate(directory, self._controllers)
        return stale

    def _delegate(self, directory: Path, wanted: frozenset[str]) -> frozenset[str]:
        enabled = {word.lstrip("+") for word in (read_text(directory / "cgroup.subtree_control") or "").split()}
        missing = sorted(wanted - enabled)
        if not missing:
            return wanted
        try:
            write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            return wanted
        except OSError:
            pass
        # One refused controller fails the whole write: find out which, one at a time.
        for controller in missing:
            try:
                write(directory / "cgroup.subtree_control", f"+{controller}")
                enabled.add(controller)
            except OSError as exc:
                log.warning("cannot enable the %s controller in %s: %s", controller, directory, exc)
        return wanted & enabled

    def _open(self, instance: str, agent_id: str) -> V2Cgroup:
        return V2Cgroup(agent_id, [self.mount / TOP / instance / agent_id], {})

    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        path = cgroup.dirs[0]
        enforced: dict[str, bool] = {}
        if limits.memory is not None:
            enforced["memory"] = "memory" in self._controllers
            if enforced["memory"]:
                write(path / "memory.max", str(limits.memory))
                if (path / "memory.swap.max").exists():
                    write(path / "memory.swap.max", "0")
                if (path / "memory.oom.group").exists():
                    # An OOM kill takes the agent's whole tree, never leaves it half alive.
                    write(path / "memory.oom.group", "1")
        if limits.pids is not None:
            enforced["pids"] = "pids" in self._controllers
            if enforced["pids"]:
                write(path / "pids.max", str(limits.pids))
        if limits.cpu is not None:
            enforced["cpu"] = "cpu" in self._controllers
            if enforced["cpu"]:
                quota = max(1000, round(limits.cpu * CPU_PERIOD_US))
                write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        return enforced
