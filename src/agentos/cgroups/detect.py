"""Find out how this host mounts cgroups: pure v2, pure v1, hybrid, or none.

A hybrid host (systemd's old default, and this project's CI machine) binds the
resource controllers to v1 hierarchies and mounts a v2 hierarchy elsewhere
(often ``/sys/fs/cgroup/unified``) with few or no controllers.

It also reads which v2 cgroup this process is in (``/proc/self/cgroup``'s ``0::`` line): a
normal user's kernel may use it when systemd delegated it (``delegate.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: Controllers agentos uses to enforce limits, and the limit each one enforces.
LIMIT_CONTROLLERS = {"memory": "memory", "pids": "pids", "cpu": "cpu"}

_V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
    "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
})


@dataclass(frozen=True)
class Layout:
    """Where each cgroup hierarchy is mounted on this host."""

    #: Mount point of the v2 (unified) hierarchy, if mounted.
    v2_mount: Path | None = None
    #: Controllers the v2 hierarchy offers (its root ``cgroup.controllers``).
    v2_controllers: frozenset[str] = frozenset()
    #: v1 controller name -> mount point of the hierarchy it is bound to.
    v1_mounts: dict[str, Path] = field(default_factory=dict)
    #: The cgroup of the v2 hierarchy the mount shows at its mount point (mountinfo's root field).
    v2_mount_root: str = "/"
    #: This process's v2 cgroup as ``/proc/self/cgroup`` names it (its ``0::`` line), if any.
    v2_own: str | None = None

    @property
    def v2_own_dir(self) -> Path | None:
        """This process's v2 cgroup as a directory under the mount, if the mount shows it."""
        if self.v2_mount is None or self.v2_own is None:
            return None
        own, root = PurePosixPath(self.v2_own), PurePosixPath(self.v2_mount_root)
        if not own.is_relative_to(root):
            return None
        return self.v2_mount / own.relative_to(root)

    @property
    def kind(self) -> str:
        """``"v2"``, ``"v1"``, ``"hybrid"`` (both mounted) or ``"none"``."""
        if self.v2_mount and self.v1_mounts:
            return "hybrid"
        if self.v2_mount:
            return "v2"
        if self.v1_mounts:
            return "v1"
        return "none"

    def driver_name(self) -> str:
        """The driver that can enforce the most limits here: ``"v2"``, ``"v1"`` or ``"none"``.

        A v2 hierarchy without controllers still tracks and kills process trees,
        so it beats having nothing; v1 wins only when it holds more of the limits.
        """
        v2 = len(set(LIMIT_CONTROLLERS) & self.v2_controllers) if self.v2_mount else -1
        v1 = len(set(LIMIT_CONTROLLERS) & set(self.v1_mounts)) if self.v1_mounts else -1
        if v2 < 0 and v1 < 0:
            return "none"
        return "v1" if v1 > v2 else "v2"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "v2_mount": str(self.v2_mount) if self.v2_mount else None,
            "v2_controllers": sorted(self.v2_controllers),
            "v1_mounts": {name: str(path) for name, path in sorted(self.v1_mounts.items())},
            "v2_own_cgroup": str(self.v2_own_dir) if self.v2_own_dir else None,
        }


def detect(mountinfo: Path = Path("/proc/self/mountinfo"), cgroup: Path = Path("/proc/self/cgroup")) -> Layout:
    """Read the mount table, the v2 root's controller list and this process's v2 cgroup."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return Layout()
    v2_mount: Path | None = None
    v2_mount_root = "/"
    v1_mounts: dict[str, Path] = {}
    for line in text.splitlines():
        parsed = _parse_mountinfo_line(line)
        if parsed is None:
            continue
        mount_root, mount_point, fstype, super_options = parsed
        if fstype == "cgroup2" and v2_mount is None:
            v2_mount, v2_mount_root = mount_point, mount_root
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option in _V1_CONTROLLERS:
                    v1_mounts.setdefault(option, mount_point)
    v2_controllers: frozenset[str] = frozenset()
    if v2_mount is not None:
        try:
            v2_controllers = frozenset((v2_mount / "cgroup.controllers").read_text().split())
        except OSError:
            v2_controllers = frozenset()
    return Layout(v2_mount=v2_mount, v2_controllers=v2_controllers, v1_mounts=v1_mounts,
                  v2_mount_root=v2_mount_root, v2_own=own_cgroup(cgroup))


def own_cgroup(cgroup: Path = Path("/proc/self/cgroup")) -> str | None:
    """The v2 cgroup of the process whose ``/proc/<pid>/cgroup`` this is (its ``0::`` line)."""
    try:
        text = cgroup.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or None
    return None


def _parse_mountinfo_line(line: str) -> tuple[str, Path, str, str] | None:
    """(root, mount point, fs type, super options) of one /proc/self/mountinfo line."""
    # Fields: id parent major:minor root mount-point options [optional...] - fstype source super
    head, sep, tail = line.partition(" - ")
    if not sep:
        return None
    fields, rest = head.split(), tail.split()
    if len(fields) < 5 or len(rest) < 3:
        return None
    return _unescape(fields[3]), Path(_unescape(fields[4])), rest[0], rest[2]


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\040``."""
    for octal, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(octal, char)
    return path
