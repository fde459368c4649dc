"""The interface every cgroup driver offers, and what v1 and v2 share.

The kernel keeps its cgroups in ``<hierarchy>/agentos/<instance>/<agent-id>``:
``<instance>`` names the kernel process (``<pid>-<start time>``), so a later
kernel can tell a subtree left by a dead kernel from one a live kernel owns, and
clean only those. Nothing outside ``agentos/`` is ever written.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from .limits import Limits

log = logging.getLogger("agentos.cgroups")

#: The parent directory, under each hierarchy, of every cgroup agentos makes.
TOP = "agentos"
_INSTANCE = re.compile(r"^(\d+)-(\d+)$")
_AGENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CgroupError(OSError):
    """A cgroup could not be made, configured or joined."""


@dataclass(slots=True)
class CgroupStats:
    """Usage counters of one agent's cgroup; ``None`` where the host cannot tell."""

    memory_current: int | None = None
    memory_peak: int | None = None
    cpu_usage_usec: int | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_usec: int | None = None
    pids_current: int | None = None
    oom_kills: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


class AgentCgroup(ABC):
    """One agent's cgroup (one directory per hierarchy the driver uses)."""

    #: True when ``procs()`` and ``kill()`` cover the agent's whole process tree.
    tracks_tree: ClassVar[bool] = True

    def __init__(self, agent_id: str, dirs: Sequence[Path], enforced: dict[str, bool]) -> None:
        self.agent_id = agent_id
        #: Distinct directories, one per mounted hierarchy in use.
        self.dirs = list(dict.fromkeys(dirs))
        #: Requested limit name -> whether the kernel really enforces it.
        self.enforced = enforced

    def attach(self, pid: int) -> None:
        """Move ``pid`` (and so everything it forks later) into this cgroup."""
        for directory in self.dirs:
            write(directory / "cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        """Pids of every live process in the cgroup."""
        pids: set[int] = set()
        for directory in self.dirs:
            pids.update(read_ints(directory / "cgroup.procs"))
        return sorted(pids)

    @abstractmethod
    def stats(self) -> CgroupStats:
        """Current usage: memory now and at peak, CPU time and throttling, tasks, OOM kills."""

    @abstractmethod
    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer has killed a process of this cgroup."""

    @abstractmethod
    def kill(self) -> int:
        """SIGKILL every process in the cgroup, in one pass; returns how many were seen.

        A process forking at the same moment may survive one pass: callers repeat
        until ``procs()`` is empty (``reap.destroy`` does, without blocking).
        """

    def remove(self) -> bool:
        """Remove the cgroup; False while processes remain (try again after ``kill``)."""
        done = True
        for directory in self.dirs:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                done = False
        return done


class CgroupDriver(ABC):
    """Makes agent cgroups on one host layout; same verbs on v1, v2 and none."""

    name: ClassVar[str]

    def __init__(self, roots: Sequence[Path], instance: str | None = None) -> None:
        #: Hierarchy directories under which ``agentos/`` lives (one per mounted hierarchy).
        self.roots = list(dict.fromkeys(roots))
        self.instance = instance or instance_name()
        self._stale_instances: list[str] = []

    @property
    @abstractmethod
    def enforceable(self) -> frozenset[str]:
        """Limit names (``memory``, ``pids``, ``cpu``) this driver can enforce here."""

    def start(self) -> list[AgentCgroup]:
        """Make this kernel's subtree; return the agent cgroups dead kernels left behind.

        The caller kills and removes those (``reap.destroy``), then calls ``prune()``.
        """
        stale: list[AgentCgroup] = []
        names: set[str] = set()
        for root in self.roots:
            top = root / TOP
            if not top.is_dir():
                continue
            for entry in top.iterdir():
                if entry.is_dir() and entry.name != self.instance and instance_is_dead(entry.name):
                    names.add(entry.name)
        self._stale_instances = sorted(names)
        for name in self._stale_instances:
            agents: set[str] = set()
            for root in self.roots:
                directory = root / TOP / name
                if directory.is_dir():
                    agents.update(e.name for e in directory.iterdir() if e.is_dir() and _AGENT.match(e.name))
            stale.extend(self._open(name, agent) for agent in sorted(agents))
        for root in self.roots:
            mkdir(root / TOP)
            mkdir(root / TOP / self.instance)
        return stale

    def prune(self) -> None:
        """Remove the (now empty) subtrees of dead kernels found by ``start()``."""
        for name in self._stale_instances:
            self._rmdirs(root / TOP / name for root in self.roots)
        self._stale_instances = []

    def stop(self) -> None:
        """Remove this kernel's subtree (agents must be gone), and ``agentos/`` if unused."""
        self._rmdirs(root / TOP / self.instance for root in self.roots)
        self._rmdirs(root / TOP for root in self.roots)

    def create(self, agent_id: str, limits: Limits) -> AgentCgroup:
        """Make the agent's cgroup and apply ``limits``; unenforceable ones are reported, not raised."""
        if not _AGENT.match(agent_id):
            raise ValueError(f"agent id {agent_id!r} cannot name a cgroup")
        cgroup = self._open(self.instance, agent_id)
        for directory in cgroup.dirs:
            mkdir(directory)
        try:
            cgroup.enforced = self._apply(cgroup, limits)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def describe(self) -> dict[str, Any]:
        """For HELLO and the isolation report."""
        return {"driver": self.name, "roots": [str(r) for r in self.roots],
                "instance": self.instance, "enforceable": sorted(self.enforceable)}

    def instance_dirs(self) -> list[Path]:
        return [root / TOP / self.instance for root in self.roots]

    @abstractmethod
    def _open(self, instance: str, agent_id: str) -> AgentCgroup:
        """A handle on ``agentos/<instance>/<agent_id>`` (the directories need not exist)."""

    @abstractmethod
    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        """Write the limits; return requested limit -> enforced."""

    @staticmethod
    def _rmdirs(directories: Iterable[Path]) -> None:
        for directory in directories:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Still used (another kernel's agentos/, or an agent not yet reaped).
                log.debug("cgroup %s not removed: %s", directory, exc)


def instance_name(pid: int | None = None) -> str:
    """``<pid>-<start time in clock ticks>``: unique for the life of the boot."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{process_start_time(pid)}"


def instance_is_dead(name: str) -> bool:
    """True for an agentos instance name whose kernel process no longer exists.

    Names that are not instance names are not ours to judge: they are kept.
    """
    match = _INSTANCE.match(name)
    if not match:
        return False
    pid, start = int(match.group(1)), int(match.group(2))
    try:
        return process_start_time(pid) != start
    except OSError:
        return True


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (starttime), read after the command name's ``)``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def mkdir(path: Path) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass


def write(path: Path, value: str) -> None:
    """Write one control file. O_CREAT makes test trees work; cgroupfs refuses it (EACCES)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def read_ints(path: Path) -> list[int]:
    text = read_text(path)
    return [int(word) for word in text.split()] if text else []


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line), as memory.events or cpu.stat."""
    text = read_text(path) or ""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def signal_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> int:
    """Signal each pid, ignoring ones already gone; returns how many were signalled."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
    return sent
