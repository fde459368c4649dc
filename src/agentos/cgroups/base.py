"""The interface every cgroup driver offers, and what v1 and v2 share.

The kernel keeps its cgroups in ``<hierarchy>/agentos/<instance>/``; each agent
has a directory there, and a child agent's directory sits inside its parent's,
as systemd nests slices::

    agentos/<instance>/<agent>/           the agent's limits: they bound its whole subtree
    agentos/<instance>/<agent>/self/      the agent's own processes (a leaf)
    agentos/<instance>/<agent>/<child>/   a child agent, laid out the same way

cgroup v2 lets only leaves hold processes once controllers are delegated, so an
agent's own processes live in ``self`` beside its children; v1 uses the same
layout so both drivers behave alike, but for its memory hierarchy: v1 lets an inner
cgroup hold processes, so there they live in the agent's directory itself. Each memory
cgroup costs the host a shrinker map (about 1 KiB per 64 superblocks the host ever had,
docs/sandboxes.md): one per agent instead of two halves that. ``<instance>`` names
the kernel process (``<pid>-<start time>``), so a later kernel can tell a subtree left by a dead
kernel from one a live kernel owns, and clean only those. Nothing outside
``agentos/`` is ever written, but for a normal user's kernel: it roots ``agentos/``
in the cgroup systemd delegated to it (``delegate.py``) and keeps that cgroup's
processes in a leaf beside it.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, ClassVar

from .limits import Limits

log = logging.getLogger("agentos.cgroups")

#: The parent directory, under each hierarchy, of every cgroup agentos makes.
TOP = "agentos"
#: The leaf inside each agent's directory that holds the agent's own processes.
LEAF = "self"
_INSTANCE = re.compile(r"^(\d+)-(\d+)\Z")
_AGENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
#: How much one read of a control file asks for.
_READ = 65536
#: Errors of reading a control file whose cgroup (or process) is going away.
_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EACCES, errno.EPERM})


class CgroupError(OSError):
    """A cgroup could not be made, configured or joined."""


@dataclass(slots=True)
class CgroupStats:
    """Usage counters of one agent's own processes; ``None`` where the host cannot tell.

    The throttling counters (``cpu_nr_periods``, ``cpu_nr_throttled``,
    ``cpu_throttled_usec``) belong to the agent's CPU limit, which its child
    agents share; every other counter leaves child agents out.
    """

    memory_current: int | None = None
    memory_peak: int | None = None
    cpu_usage_usec: int | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_usec: int | None = None
    pids_current: int | None = None
    oom_kills: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        # Not dataclasses.asdict: LIST calls this for every agent, and asdict deep-copies each field.
        return {"memory_current": self.memory_current, "memory_peak": self.memory_peak,
                "cpu_usage_usec": self.cpu_usage_usec, "cpu_nr_periods": self.cpu_nr_periods,
                "cpu_nr_throttled": self.cpu_nr_throttled, "cpu_throttled_usec": self.cpu_throttled_usec,
                "pids_current": self.pids_current, "oom_kills": self.oom_kills}


class AgentCgroup(ABC):
    """One agent's cgroup: its directories (limits) and their ``self`` leaves (its processes).

    ``attach``, ``procs``, ``kill``, ``stats`` and ``oom_killed`` cover the agent's
    own processes only: a child agent has a cgroup (and a lifecycle) of its own,
    so killing a parent never kills its children behind the caller's back. Only
    the limits cover the subtree.
    """

    #: True when ``procs()`` and ``kill()`` cover every process the agent itself started.
    tracks_tree: ClassVar[bool] = True

    def __init__(self, agent_id: str, dirs: Sequence[str | Path], enforced: dict[str, bool],
                 parent: AgentCgroup | None = None, leaves: Sequence[str | Path] | None = None) -> None:
        self.agent_id = agent_id
        # Kept as strings, made Paths only when asked for (``dirs``, ``leaves``): a live agent's
        # Paths, each with its parts list and cached strings, cost the kernel ~3 KB of memory.
        self._dirs = tuple(dict.fromkeys(str(directory) for directory in dirs))
        self._leaves = tuple(f"{directory}/{LEAF}" for directory in self._dirs) if leaves is None else tuple(
            str(leaf) for leaf in leaves)
        #: Requested limit name -> whether the kernel really enforces it.
        self.enforced = enforced
        #: What was asked for this agent (its ancestors' limits bound it too).
        self.limits = Limits()
        #: The agent whose cgroup this one sits in.
        self.parent = parent
        self._children: set[AgentCgroup] = set()
        #: Whether a child agent's cgroup was ever made below this one.
        self.nested = False
        self._removed = False

    @property
    def dirs(self) -> list[Path]:
        """Distinct directories, one per mounted hierarchy in use."""
        return [Path(directory) for directory in self._dirs]

    @property
    def leaves(self) -> list[Path]:
        """Where the agent's own processes live, one per directory: its ``self`` leaf, unless
        the driver says the directory itself."""
        return [Path(leaf) for leaf in self._leaves]

    @property
    def leaf_dirs(self) -> list[Path]:
        """Leaves that are directories of their own (made and removed with the agent's processes)."""
        return [Path(leaf) for leaf in self._own_leaf_dirs()]

    def _own_leaf_dirs(self) -> list[str]:
        return [leaf for leaf in self._leaves if leaf not in self._dirs]

    def _shared(self) -> list[str]:
        """Leaves that are the agent's directory itself (removed once its children are gone too)."""
        return [leaf for leaf in self._leaves if leaf in self._dirs]

    def _outer(self) -> list[str]:
        """Directories that are not their own leaf: a process there moved itself there."""
        return [directory for directory in self._dirs if directory not in self._leaves]

    def attach(self, pid: int) -> None:
        """Move ``pid`` (and so everything it forks later) into the agent's leaf."""
        for leaf in self._leaves:
            write(f"{leaf}/cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        """Pids of the agent's own live processes (child agents' are not included)."""
        return read_procs([*self._leaves, *self._outer()])

    def kill(self) -> int:
        """SIGKILL the agent's own processes in one pass; returns how many were seen.

        Child agents are left alone. A process forking at the same moment may
        survive one pass: callers repeat until ``procs()`` is empty
        (``reap.destroy`` does, without blocking).
        """
        # agentos puts no process in an agent's directory that has a leaf, but one that
        # moved itself there (or an older kernel's layout) must not outlive the agent.
        return self._kill_leaf() + signal_all(read_procs(self._outer()))

    @abstractmethod
    def _kill_leaf(self) -> int:
        """SIGKILL everything in the leaf; returns how many processes were seen."""

    def freeze(self) -> None:
        """Ask the kernel to freeze the agent's own processes (child agents are frozen on their
        own); returns at once: ``frozen()`` tells when it is done, and writing again retries the
        tasks a first pass could not stop."""
        raise CgroupError(errno.EOPNOTSUPP, f"no cgroup freezer for agent {self.agent_id}")

    def thaw(self) -> None:
        """Let the agent's own processes run again (and take any signal sent while frozen)."""
        raise CgroupError(errno.EOPNOTSUPP, f"no cgroup freezer for agent {self.agent_id}")

    async def thawed(self) -> None:
        """Returns once the last ``thaw()`` took effect: at once here, where writing it is
        thawing (a cgroup on another machine answers later)."""

    def frozen(self) -> bool:
        """Whether every process of the agent's own is stopped by the freezer."""
        return False

    @abstractmethod
    def stats(self) -> CgroupStats:
        """Current usage: memory now and at peak, CPU time and throttling, tasks, OOM kills."""

    @abstractmethod
    def oom_kills(self) -> int:
        """How many of the agent's own processes the kernel's OOM killer has killed (0 where
        nothing counts them)."""

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer has killed one of the agent's own processes."""
        return self.oom_kills() > 0

    def _add_child(self, child: AgentCgroup) -> None:
        self._children.add(child)
        self.nested = True

    @property
    def children(self) -> frozenset[AgentCgroup]:
        """Child agents' cgroups that still exist below this one."""
        return frozenset(self._children)

    @property
    def removed(self) -> bool:
        """True once ``remove()`` succeeded: no processes, and no new children."""
        return self._removed

    def remove(self) -> bool:
        """Remove the agent's leaf; False while its processes remain (try again after ``kill``).

        The agent's directory goes with it or, while child agents' cgroups remain
        below it, with the last of them: until then its limits keep bounding them.
        """
        if not rmdirs(self._own_leaf_dirs()) or read_procs(self._shared()):
            return False
        self._removed = True
        node: AgentCgroup | None = self
        while node is not None and node._removed and not node._children:
            if not rmdirs(node._dirs):
                log.warning("cgroup of agent %s not removed: something else is in %s",
                            node.agent_id, list(node._dirs))
                break
            if node.parent is not None:
                node.parent._children.discard(node)
            node = node.parent
        return True


class CgroupDriver(ABC):
    """Makes agent cgroups on one host layout; same verbs on v1, v2 and none."""

    name: ClassVar[str]
    #: The class of the cgroups this driver makes (a parent must be one of them).
    cgroup_type: ClassVar[type[AgentCgroup]]
    #: True when ``roots`` is a cgroup delegated to this (normal) user, not a hierarchy's root.
    delegated = False
    #: True when ``adopt`` can rename a cgroup (cgroup v1; v2 has no rename).
    adopts: ClassVar[bool] = False

    def __init__(self, roots: Sequence[Path], instance: str | None = None) -> None:
        #: Hierarchy directories under which ``agentos/`` lives (one per mounted hierarchy).
        self.roots = list(dict.fromkeys(roots))
        self.instance = instance or instance_name()
        self._stale_instances: list[str] = []

    @property
    @abstractmethod
    def enforceable(self) -> frozenset[str]:
        """Limit names (``memory``, ``pids``, ``cpu``) this driver can enforce here."""

    @property
    def freezer(self) -> bool:
        """Whether this driver's cgroups can be frozen (PAUSE); False unless a driver says so."""
        return False

    def start(self) -> list[AgentCgroup]:
        """Make this kernel's subtree; return the agent cgroups dead kernels left behind
        (``stale()``), for the caller to destroy before calling ``prune()``."""
        stale = self.stale()
        for root in self.roots:
            mkdir(root / TOP, exist_ok=True)
            mkdir(root / TOP / self.instance, exist_ok=True)
        return stale

    def stale(self, instance: str | None = None) -> list[AgentCgroup]:
        """The agent cgroups that kernels no longer running left under ``agentos/``; makes nothing.

        Only instance directories (``<pid>-<start time>``) whose kernel process is gone
        count (with ``instance``, only that one: a dead kernel's guardian cleaning after it):
        a live kernel's subtree, this driver's own and any other name are never
        touched. Nested ones come with their parents linked, so destroying all of them
        (in any order, ``reap.destroy``) removes each tree depth-first; ``prune()`` then
        removes the emptied instance directories. ``reap.remove_stale`` does both.
        """
        names: set[str] = set()
        for root in self.roots:
            top = root / TOP
            if not top.is_dir():
                continue
            for entry in top.iterdir():
                if (entry.is_dir() and entry.name != self.instance and instance in (None, entry.name)
                        and instance_is_dead(entry.name)):
                    names.add(entry.name)
        self._stale_instances = sorted(names)
        return [cgroup for name in self._stale_instances for cgroup in self._stale_tree(name)]

    def _stale_tree(self, instance: str) -> list[AgentCgroup]:
        """Every agent cgroup under a dead instance, parents before their children."""
        found: list[AgentCgroup] = []
        # A kernel may have died halfway through a create: take the union of the hierarchies.
        pending: list[tuple[PurePath, AgentCgroup | None]] = [(PurePath(), None)]
        while pending:
            relative, parent = pending.pop()
            names: set[str] = set()
            for root in self.roots:
                directory = root / TOP / instance / relative
                if directory.is_dir():
                    with os.scandir(directory) as entries:
                        names.update(entry.name for entry in entries
                                     if entry.is_dir() and entry.name != LEAF and _AGENT.match(entry.name))
            for agent_id in sorted(names):
                cgroup = self._open(instance, agent_id, parent)
                if parent is not None:
                    parent._add_child(cgroup)
                found.append(cgroup)
                pending.append((relative / agent_id, cgroup))
        return found

    def prune(self) -> None:
        """Remove the (now empty) subtrees of dead kernels found by ``stale()``."""
        for name in self._stale_instances:
            self._rmdirs(root / TOP / name for root in self.roots)
        self._stale_instances = []

    def stop(self) -> None:
        """Remove this kernel's subtree (agents must be gone), and ``agentos/`` if unused."""
        self._rmdirs(root / TOP / self.instance for root in self.roots)
        self._rmdirs(root / TOP for root in self.roots)

    def create(self, agent_id: str, limits: Limits, parent: AgentCgroup | None = None) -> AgentCgroup:
        """Make the agent's cgroup, inside ``parent``'s if given, and apply ``limits``.

        The parent's limits (and its ancestors') then bound the new cgroup too.
        Limits the host cannot enforce are reported in ``enforced``, not raised.
        Whatever fails, nothing this call made is left behind.
        """
        cgroup = self.prepare(agent_id, limits, parent)
        self.make(cgroup)
        return cgroup

    def prepare(self, agent_id: str, limits: Limits, parent: AgentCgroup | None = None) -> AgentCgroup:
        """``create``'s cgroup, checked and named but not made yet (no system call): ``make``
        makes it, where waiting for the host costs nobody (SPAWN: in the launch's thread,
        while the agent's sandbox sets itself up)."""
        if not _AGENT.match(agent_id) or agent_id == LEAF:
            raise ValueError(f"agent id {agent_id!r} cannot name a cgroup")
        if parent is not None:
            if not isinstance(parent, self.cgroup_type):
                raise TypeError(f"parent must be a {self.cgroup_type.__name__}, got {type(parent).__name__}")
            if parent.removed:
                raise CgroupError(errno.ENOENT, f"the cgroup of agent {parent.agent_id} is already removed")
        cgroup = self._open(self.instance, agent_id, parent)
        cgroup.limits = limits
        return cgroup

    def make(self, cgroup: AgentCgroup) -> None:
        """Make a ``prepare``d cgroup and apply its limits; whatever fails, nothing this call
        made is left behind."""
        made: list[str] = []
        try:
            for directory in cgroup._dirs:
                mkdir(directory)  # an existing one belongs to another agent: never share it
                made.append(directory)
            cgroup.enforced = self._apply(cgroup, cgroup.limits)
            for leaf in cgroup._own_leaf_dirs():
                mkdir(leaf)
                made.append(leaf)
            self._prepare_leaf(cgroup)
        except BaseException:
            self._rmdirs(reversed(made))
            raise
        if cgroup.parent is not None:
            cgroup.parent._add_child(cgroup)

    def adopt(self, spare: AgentCgroup, cgroup: AgentCgroup) -> None:
        """Make the ``make``d cgroup ``spare``, with what it holds, the ``prepare``d ``cgroup``:
        ``cgroup``'s limits written in it, then its directories renamed to ``cgroup``'s (v1 only:
        ``adopts``). A process moved into ``spare`` ahead of time (an embryo) is so in the agent's
        cgroup without a move, with its limits from before it runs anything. Both at the top of
        this kernel's tree. Raises OSError with nothing renamed (``spare`` is then still whole)."""
        if not self.adopts or spare.parent is not None or cgroup.parent is not None:
            raise CgroupError(errno.EOPNOTSUPP, f"the {self.name} driver cannot rename cgroups")
        cgroup.enforced = self._apply(spare, cgroup.limits)
        renamed: list[tuple[str, str]] = []
        try:
            for old, new in zip(spare._dirs, cgroup._dirs, strict=True):
                os.rename(old, new)
                renamed.append((old, new))
        except BaseException:
            for old, new in reversed(renamed):
                os.rename(new, old)
            raise

    def agent_of(self, pid: int) -> str | None:
        """The id of the agent of this kernel that process ``pid`` belongs to, if any.

        Anywhere inside an agent's directory counts (its leaf, or a place a process
        moved itself to): the innermost agent around it is the answer.
        """
        if not self.roots:
            return None
        for line in (read_text(Path(f"/proc/{pid}/cgroup")) or "").splitlines():
            # Wherever the roots are in the hierarchy (a delegated cgroup): the instance names the kernel.
            parts = PurePath(line.split(":", 2)[-1]).parts
            for at in range(len(parts) - 2):
                if parts[at] == TOP and parts[at + 1] == self.instance:
                    agents = [part for part in parts[at + 2:] if part != LEAF]
                    return agents[-1] if agents else None
        return None

    def describe(self) -> dict[str, Any]:
        """For HELLO and the isolation report."""
        return {"driver": self.name, "roots": [str(r) for r in self.roots],
                "instance": self.instance, "enforceable": sorted(self.enforceable),
                "freezer": self.freezer, "delegated": self.delegated}

    def instance_dirs(self) -> list[Path]:
        return [root / TOP / self.instance for root in self.roots]

    @abstractmethod
    def _open(self, instance: str, agent_id: str, parent: AgentCgroup | None) -> AgentCgroup:
        """A handle on ``agent_id``'s cgroup in ``parent``'s, or at the top of ``instance``.

        The directories need not exist.
        """

    @abstractmethod
    def _apply(self, cgroup: AgentCgroup, limits: Limits) -> dict[str, bool]:
        """Write the limits in the agent's directories; return requested limit -> enforced."""

    def _prepare_leaf(self, cgroup: AgentCgroup) -> None:
        """Configure the freshly made leaves before any process joins them."""

    @staticmethod
    def _rmdirs(directories: Iterable[str | Path]) -> None:
        """Remove what can be; log the rest (another kernel's ``agentos/``, an agent not yet reaped)."""
        for directory in directories:
            try:
                if not rmdir(directory):
                    log.debug("cgroup %s not removed: still in use", directory)
            except OSError as exc:
                log.warning("cgroup %s not removed: %s", directory, exc)


def instance_name(pid: int | None = None) -> str:
    """``<pid>-<start time in clock ticks>``: unique for the life of the boot."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{process_start_time(pid)}"


def is_instance_name(name: str) -> bool:
    """Whether ``name`` has the form of an instance directory's (``<pid>-<start time>``)."""
    return _INSTANCE.match(name) is not None


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


def mkdir(path: str | Path, exist_ok: bool = False) -> None:
    """Make one cgroup directory (the kernel fills it with control files)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not exist_ok:
            raise


def rmdir(path: str | Path) -> bool:
    """Remove one cgroup directory; False while processes or child cgroups keep it busy."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise
        return False
    return True


def rmdirs(directories: Iterable[str | Path]) -> bool:
    """``rmdir`` each; True when all are gone."""
    return all([rmdir(directory) for directory in directories])


def write(path: str | Path, value: str) -> None:
    """Write one control file. O_CREAT makes test trees work; cgroupfs refuses it (EACCES)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_text(path: str | Path) -> str | None:
    """A control file's text, or None when it (or its cgroup) is gone or unreadable.

    Plain ``os`` calls: LIST reads several files per agent, and ``open()``'s
    buffered text layer costs more than the read itself. A read that returns less than
    asked is the end (control files and /proc are seq_files), which spares a second read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    try:
        chunks = []
        while chunk := os.read(fd, _READ):
            chunks.append(chunk)
            if len(chunk) < _READ:
                break
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_int(path: str | Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def read_ints(path: str | Path) -> list[int]:
    text = read_text(path)
    return [int(word) for word in text.split()] if text else []


def read_procs(directories: Iterable[str | Path]) -> list[int]:
    """The pids in the ``cgroup.procs`` of each directory (its own members, not descendants')."""
    return sorted({pid for directory in directories for pid in read_ints(f"{directory}/cgroup.procs")})


def read_keyed(path: str | Path) -> dict[str, int]:
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
