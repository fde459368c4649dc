"""Agents' workspaces: a private writable directory at /workspace with a real disk quota.

A root kernel gives each workspace a file system of its own: a sparse image file
``<state_dir>/workspaces/<instance>/<agent id>.img`` (0600), made ext4 without a
journal, attached to a loop device that detaches itself when its last user closes
it (``LO_FLAGS_AUTOCLEAR``), and mounted nosuid,nodev on ``.../<agent id>/``. The
agent sees that file system's ``data`` directory at /workspace (idmapped to its
uid, like every writable bind of a root kernel), so writing past the size is
ENOSPC there and nowhere else.

The rest of the file system's root holds its agent's children's reservations: a
child's workspace is carved out of its parent's, as a file of the child's size
allocated in the parent's file system (where the parent agent cannot see it), so
a parent's size bounds its whole subtree on disk, as its memory limit does in
memory. A reservation goes when its child ends.

Named volumes (``processes.volumes``) are mounted in the same instance directory, with the
same helpers, and their leftovers go the same way.

The instance directory becomes a shared mount (a bind of itself) when the first
workspace or volume is mounted: embryo sandboxes are forked, with a copy of the host's mount
table, before the workspace they will bind exists, and only propagation shows it
to them; a workspace's unmount reaches those copies the same way. An embryo
forked before the shared mount itself existed cannot see any workspace: its
launch fails on the bind (``stale_embryo``), and the launch is tried once more,
from the embryo forked after it. A kernel that never makes a workspace mounts
nothing.

A kernel that is not root cannot mount a disk image. There a workspace is
refused (``unavailable``) unless ``allow_degraded``, which gives a tmpfs of the
same size in the agent's view instead, charged to its memory, and says so in
``isolation.degraded``.

A kernel that was SIGKILLed leaves its instance's mounts and images behind: the
next kernel started on the same state dir unmounts and removes them (the mount
table says what is mounted there; the instance name says whose kernel is dead).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cgroups.base import instance_is_dead, instance_name
from ..errors import PermissionDenied, Unavailable
from ..sandbox._linux import linux
from ..sandbox.spec import WORKSPACE_PATH, SandboxError

log = logging.getLogger("agentos.processes.workspace")

#: Where the tools that make a file system live, whatever the kernel's own PATH.
_TOOL_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
#: The directory of a workspace's file system the agent sees; beside it, its children's reservations.
DATA, RESERVED = "data", "reserved"

_LOOP_CONTROL = "/dev/loop-control"
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A  # Linux >= 5.8; the sandbox's mount_setattr needs 5.12 anyway
_LO_FLAGS_AUTOCLEAR = 4
#: Another attacher may take the device LOOP_CTL_GET_FREE named first (EBUSY): ask again.
_ATTACH_TRIES = 32
#: The linux module exports the flags the sandbox uses; shared propagation is ours alone.
_MS_SHARED = 1 << 20


@dataclass
class Workspace:
    """One agent's workspace, and what was made for it (to unmake, in reverse)."""

    agent_id: str
    size: int
    #: ``disk`` (its own file system) or ``tmpfs`` (degraded: memory in its own view).
    kind: str
    #: The sandbox's ``workspace``: the host directory bound at /workspace, or the tmpfs's size.
    view: str | int
    image: Path | None = None
    mountpoint: Path | None = None
    #: The file holding this workspace's room in its parent's file system.
    reservation: Path | None = None

    def report(self) -> dict[str, Any]:
        return {"path": WORKSPACE_PATH, "size": self.size, "kind": self.kind}

    def reserve(self, child_id: str, size: int) -> Path | None:
        """Carve ``size`` bytes out of this workspace for a child's; None for a tmpfs (memory,
        which the cgroups nest)."""
        if self.mountpoint is None:
            return None
        path = self.mountpoint / RESERVED / child_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            path.unlink()
            if exc.errno != errno.ENOSPC:
                raise
            info = os.statvfs(self.mountpoint)
            raise PermissionDenied(
                f"workspace.size: {size} bytes do not fit in the spawner's workspace ({info.f_bavail * info.f_frsize}"
                " bytes free): a child's workspace is carved out of its parent's", field="workspace.size") from None
        finally:
            os.close(fd)
        return path


class Workspaces:
    """The workspaces of one kernel instance, under ``<state_dir>/workspaces/<instance>/``.

    ``create`` and ``remove`` block (mkfs, mount, unmount): call them from a worker thread.
    """

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "workspaces"
        self.dir = self.root / instance_name()
        self._live: dict[str, Workspace] = {}
        #: Why this kernel cannot give a disk quota (None: it can).
        self.no_disk: str | None = "not started"
        self._mkfs: str | None = None
        self._shared = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Remove what dead kernels left, and see whether this one can make disk images."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        remove_stale(self.root)
        self._mkfs = shutil.which("mkfs.ext4", path=_TOOL_PATH)
        self.no_disk = _why_no_disk(self._mkfs)
        if self.no_disk is not None:
            log.info("workspaces: no disk quota on this kernel (%s)", self.no_disk)

    def close(self) -> None:
        """Remove every workspace left, then the instance directory."""
        for agent_id in list(self._live):
            self.remove(agent_id)
        with self._lock:
            if self._shared:
                unmount(self.dir)
                rmdir_quietly(self.dir)
                self._shared = False

    def get(self, agent_id: str) -> Workspace | None:
        return self._live.get(agent_id)

    def create(self, agent_id: str, size: int, *, parent: str | None, allow_degraded: bool) -> Workspace:
        """Make ``agent_id``'s workspace of ``size`` bytes, carved out of ``parent``'s if it has one.

        Raises ``Unavailable`` (no disk quota here and no ``allow_degraded``, or a step failed)
        or ``PermissionDenied`` (no room in the parent's); nothing is left behind then.
        """
        if self.no_disk is not None:
            if not allow_degraded:
                raise Unavailable(
                    f"workspace: this kernel cannot give a disk quota ({self.no_disk}); run the kernel as "
                    "root on a host with loop devices and mkfs.ext4 (e2fsprogs), or set allow_degraded for "
                    "a tmpfs workspace of that size (memory, not disk)", field="workspace")
            workspace = Workspace(agent_id, size, "tmpfs", size)
        else:
            mountpoint = self.dir / agent_id
            workspace = Workspace(agent_id, size, "disk", str(mountpoint / DATA), image=self.dir / f"{agent_id}.img",
                                  mountpoint=mountpoint)
            try:
                self._make(workspace, self._live.get(parent) if parent is not None else None)
            except BaseException as exc:
                _dismantle(workspace)
                if isinstance(exc, OSError):
                    raise Unavailable(f"cannot make the workspace: {exc}", field="workspace") from None
                raise
        self._live[agent_id] = workspace
        return workspace

    def degraded(self, workspace: Workspace) -> list[str]:
        """What ``isolation.degraded`` says of ``workspace``."""
        if workspace.kind == "disk":
            return []
        return [f"workspace: a tmpfs of {workspace.size} bytes, charged to memory, not a disk quota: {self.no_disk}"]

    def remove(self, agent_id: str) -> None:
        """Unmount ``agent_id``'s workspace (its loop device then detaches), delete its image and
        give its room back to its parent's."""
        workspace = self._live.pop(agent_id, None)
        if workspace is not None:
            _dismantle(workspace)

    def share(self) -> None:
        """Make the instance directory, a shared mount, once (mounts made below it, workspaces'
        and volumes', reach sandboxes forked before them)."""
        with self._lock:
            if self._shared:
                return
            self.dir.mkdir(mode=0o700, exist_ok=True)
            try:
                linux.mount(str(self.dir), str(self.dir), None, linux.MS_BIND)
                linux.mount(None, str(self.dir), None, _MS_SHARED)
            except OSError:
                unmount(self.dir)
                rmdir_quietly(self.dir)
                raise
            self._shared = True

    def make_filesystem(self, image: Path, *, journal: bool) -> None:
        """ext4 on the file ``image`` (its size already set); no blocks reserved for root."""
        assert self._mkfs is not None
        features = [] if journal else ["-O", "^has_journal"]
        made = subprocess.run([self._mkfs, "-q", "-F", *features, "-m", "0", "-E", "nodiscard", str(image)],
                              env={"PATH": _TOOL_PATH}, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
        if made.returncode != 0:
            raise OSError(errno.EIO, f"mkfs.ext4 failed: {made.stderr.strip() or made.returncode}")

    def _make(self, workspace: Workspace, parent: Workspace | None) -> None:
        assert workspace.image is not None and workspace.mountpoint is not None and self._mkfs is not None
        self.share()
        if parent is not None:
            workspace.reservation = parent.reserve(workspace.agent_id, workspace.size)
        fd = os.open(workspace.image, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, workspace.size)  # sparse: the host's disk holds only what is written
        finally:
            os.close(fd)
        # No journal: the image dies with its agent, so nothing needs replaying after a crash.
        self.make_filesystem(workspace.image, journal=False)
        workspace.mountpoint.mkdir(mode=0o700)
        mount_image(workspace.image, workspace.mountpoint)
        for name in (DATA, RESERVED):
            (workspace.mountpoint / name).mkdir(mode=0o700)


def _why_no_disk(mkfs: str | None) -> str | None:
    if os.geteuid() != 0:
        return "the kernel is not root, and only root may mount a disk image"
    if not os.path.exists(_LOOP_CONTROL):
        return f"no {_LOOP_CONTROL} (load the loop module: modprobe loop)"
    if mkfs is None:
        return "mkfs.ext4 is not installed (package e2fsprogs)"
    return None


def mount_image(image: Path, mountpoint: Path) -> None:
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        loop, device = _attach(backing, str(image))
    finally:
        os.close(backing)
    try:
        linux.mount(device, str(mountpoint), "ext4", linux.MS_NOSUID | linux.MS_NODEV, None)
    finally:
        # The mount holds the device now; without one, this close detaches it (autoclear).
        os.close(loop)


def _attach(backing: int, name: str) -> tuple[int, str]:
    """A free loop device on ``backing``, detaching itself once no one has it open: (fd, path)."""
    info = struct.pack("<5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR,
                       os.fsencode(name)[:63], b"", b"", 0, 0)
    config = struct.pack("<II", backing, 0) + info + bytes(64)  # struct loop_config
    control = os.open(_LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(_ATTACH_TRIES):
            device = f"/dev/loop{fcntl.ioctl(control, _LOOP_CTL_GET_FREE)}"
            loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, _LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(loop)
                if exc.errno != errno.EBUSY:
                    raise
                continue
            return loop, device
    finally:
        os.close(control)
    raise OSError(errno.EBUSY, "no free loop device")


def loop_backings() -> set[str]:
    """The files loop devices are attached to now (as their real paths)."""
    found = set()
    for entry in Path("/sys/block").glob("loop*"):
        try:
            found.add((entry / "loop" / "backing_file").read_text().strip())
        except OSError:
            pass  # not attached, or detaching as we read (ENODEV)
    return found


def _dismantle(workspace: Workspace) -> None:
    """Undo whatever of ``workspace`` exists; each step independent of the others having worked."""
    if workspace.mountpoint is not None:
        unmount(workspace.mountpoint)
        rmdir_quietly(workspace.mountpoint)
    if workspace.image is not None:
        workspace.image.unlink(missing_ok=True)
    if workspace.reservation is not None:
        # Gone already when the parent's workspace went first.
        workspace.reservation.unlink(missing_ok=True)


def unmount(path: Path) -> None:
    """Detach the mount on ``path`` if there is one (lazily: an agent's view may still hold it a
    moment). Asked of the kernel, not ``os.path.ismount``: a bind of a directory on itself is on
    the same device as its parent."""
    try:
        linux.umount2(str(path), linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point, or never made
            log.warning("cannot unmount %s: %s", path, exc)


def rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = Path(_unescape(line.split()[4].decode(errors="surrogateescape")))
            if point == root or str(point).startswith(prefix):
                found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def remove_stale(root: Path) -> list[str]:
    """Remove the workspaces of kernels that died under ``root``: unmount, delete the images,
    remove the directories. Instances of live kernels, and names that are not instance names,
    are never touched. Returns the instances removed."""
    removed = []
    for entry in sorted(os.listdir(root)):
        instance = root / entry
        if not instance_is_dead(entry) or instance.is_symlink() or not instance.is_dir():
            continue
        try:
            _remove_instance(instance)
        except OSError as exc:
            log.warning("cannot remove the workspaces %s left by a dead kernel: %s", instance, exc)
        else:
            removed.append(entry)
    if removed:
        log.info("removed the workspaces of %d kernel(s) that died: %s", len(removed), ", ".join(removed))
    return removed


def _remove_instance(instance: Path) -> None:
    for point in mounts_under(instance):
        linux.umount2(str(point), linux.MNT_DETACH)
    # Only empty directories are removed (rmdir): nothing is ever deleted through a mount.
    for item in os.listdir(instance):
        path = instance / item
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            path.rmdir()
    instance.rmdir()


def stale_embryo(error: SandboxError, dests: Iterable[str]) -> bool:
    """Whether a launch failed because its sandbox was forked before the instance directory's
    shared mount existed (it finds nothing to bind at one of ``dests``, the view paths of its
    workspace and volumes); the next sandbox is forked after."""
    return error.errno == errno.ENOENT and any(error.step.endswith(f" {dest}") for dest in dests)
