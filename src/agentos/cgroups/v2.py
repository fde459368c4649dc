"""cgroup v2 driver: one unified hierarchy, limits in memory.max, pids.max, cpu.max."""
from __future__ import annotations

import os
from pathlib import Path

from .base import (
    TOP,
    AgentCgroup,
    CgroupDriver,
    CgroupStats,
    log,
    read_int,
    read_keyed,
    read_procs,
    read_text,
    signal_all,
    write,
)
from .delegate import enter_leaf, leave_leaf
from .detect import LIMIT_CONTROLLERS
from .limits import CPU_PERIOD_US, Limits, cpu_quota_us, pids_max


class V2Cgroup(AgentCgroup):
    """An agent's directory in the unified hierarchy, and its ``self`` leaf."""

    @property
    def path(self) -> str:
        """The agent's directory: its limits, which bound its child agents too."""
        return self._dirs[0]

    @property
    def leaf(self) -> str:
        """The agent's own processes."""
        return self._leaves[0]

    def stats(self) -> CgroupStats:
        cpu = read_keyed(f"{self.leaf}/cpu.stat")
        # Throttling is counted where cpu.max is written: the agent's directory.
        throttling = read_keyed(f"{self.path}/cpu.stat")
        return CgroupStats(
            memory_current=read_int(f"{self.leaf}/memory.current"),
            memory_peak=read_int(f"{self.leaf}/memory.peak"),
            cpu_usage_usec=cpu.get("usage_usec"),
            cpu_nr_periods=throttling.get("nr_periods"),
            cpu_nr_throttled=throttling.get("nr_throttled"),
            cpu_throttled_usec=throttling.get("throttled_usec"),
            pids_current=read_int(f"{self.leaf}/pids.current"),
            oom_kills=read_keyed(f"{self.leaf}/memory.events").get("oom_kill"),
        )

    def oom_kills(self) -> int:
        # Charged to the victim's own cgroup, whichever ancestor's limit was hit.
        return read_keyed(f"{self.leaf}/memory.events").get("oom_kill", 0)

    def freeze(self) -> None:
        write(f"{self.leaf}/cgroup.freeze", "1")

    def thaw(self) -> None:
        write(f"{self.leaf}/cgroup.freeze", "0")

    def frozen(self) -> bool:
        # cgroup.freeze says what was asked; cgroup.events says when every task has stopped.
        # A leaf already gone (its agent ended) has nothing left to run.
        return read_keyed(f"{self.leaf}/cgroup.events").get("frozen", 1) == 1

    def _kill_leaf(self) -> int:
        pids = read_procs(self._leaves)
        if os.path.exists(f"{self.leaf}/cgroup.kill"):
            # Linux >= 5.14 kills the whole leaf atomically, forks in flight included.
            write(f"{self.leaf}/cgroup.kill", "1")
            return len(pids)
        return signal_all(pids)


class V2Driver(CgroupDriver):
    """Agents under ``<root>/agentos/<instance>/``, controllers delegated down to them.

    ``root`` is the hierarchy's mount point or, with ``delegated``, the cgroup systemd
    delegated to this normal user (``delegate.py``), whose processes ``start()`` first
    moves into a leaf.
    """

    name = "v2"
    cgroup_type = V2Cgroup

    def __init__(self, root: Path, controllers: frozenset[str], instance: str | None = None, *,
                 delegated: bool = False) -> None:
        super().__init__([root], instance)
        self.root = root
        self.delegated = delegated
        #: Controllers ``root`` offers; ``start()`` narrows this to what it could delegate.
        self._controllers = frozenset(controllers) & set(LIMIT_CONTROLLERS.values())
        #: Controllers ``start()`` turned on in a delegated root, for ``stop()`` to turn off.
        self._turned_on: frozenset[str] = frozenset()

    @property
    def enforceable(self) -> frozenset[str]:
        return frozenset(limit for limit, ctl in LIMIT_CONTROLLERS.items() if ctl in self._controllers)

    @property
    def freezer(self) -> bool:
        # Linux >= 5.2; a core file, so it needs no controller and comes with a delegated subtree.
        return (self.root / TOP / self.instance / "cgroup.freeze").exists()

    def start(self) -> list[AgentCgroup]:
        if not self.delegated:
            return self._start()
        before = _enabled(self.root)
        made = False
        try:
            # A cgroup holding processes may not enable controllers for its children.
            made = enter_leaf(self.root)
            stale = self._start()
        except BaseException:
            self._note_turned_on(before, made)
            self.stop()
            raise
        self._note_turned_on(before, made)
        return stale

    def _note_turned_on(self, before: set[str], made: bool) -> None:
        after = _enabled(self.root)
        # Found arranged by an earlier kernel of the scope, the arrangement is this kernel's to
        # undo too, should it stop last: a kernel enables nothing but limit controllers there.
        self._turned_on = frozenset(after - before if made else after & set(LIMIT_CONTROLLERS.values()))

    def _start(self) -> list[AgentCgroup]:
        stale = super().start()
        # A controller reaches an agent only if every ancestor below the root enables it.
        for directory in (self.root, self.root / TOP, self.root / TOP / self.instance):
            self._controllers = self._delegate(directory, self._controllers)
        return stale

    def stop(self) -> None:
        super().stop()
        if self.delegated:
            leave_leaf(self.root, self._turned_on)

    def _delegate(self, directory: Path, wanted: frozenset[str]) -> frozenset[str]:
        enabled = _enabled(directory)
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

    def _open(self, instance: str, agent_id: str, parent: AgentCgroup | None) -> V2Cgroup:
        base = self.root / TOP / instance if parent is None else parent.dirs[0]
        return V2Cgroup(agent_id, [base / agent_id], {}, parent)

    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        path = cgroup.dirs[0]
        enforced: dict[str, bool] = {}
        if limits.memory is not None:
            enforced["memory"] = "memory" in self._controllers
            if enforced["memory"]:
                write(path / "memory.max", str(limits.memory))
                if (path / "memory.swap.max").exists():
                    write(path / "memory.swap.max", "0")
        if limits.pids is not None:
            enforced["pids"] = "pids" in self._controllers
            if enforced["pids"]:
                write(path / "pids.max", pids_max(limits.pids))
        if limits.cpu is not None:
            enforced["cpu"] = "cpu" in self._controllers
            if enforced["cpu"]:
                write(path / "cpu.max", f"{cpu_quota_us(limits.cpu)} {CPU_PERIOD_US}")
        if self._controllers:
            # The leaf and the child agents get them; allowed only while no process is here.
            write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(self._controllers)))
        return enforced

    def _prepare_leaf(self, cgroup: AgentCgroup) -> None:
        oom_group = cgroup.leaves[0] / "memory.oom.group"
        if oom_group.exists():
            # An OOM kill takes all of the agent's own processes, never leaves it half
            # alive; its child agents are OOM units of their own.
            write(oom_group, "1")


def _enabled(directory: Path) -> set[str]:
    """The controllers ``directory`` enables for its children (its ``cgroup.subtree_control``)."""
    return {word.lstrip("+") for word in (read_text(directory / "cgroup.subtree_control") or "").split()}
