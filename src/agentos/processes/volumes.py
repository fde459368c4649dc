"""Named volumes: a project's directories with a disk quota, outliving its agents and the kernel.

A volume belongs to a uid (the outside client that created it, or whose agents did)
and a project; no other uid or project can name it. Its data lives under the state
dir, ``<state_dir>/volumes/<uid>/<project>/<name>.img`` (``_`` for no project): a
sparse image file (0600) holding an ext4 file system (with a journal: unlike a
workspace, it must survive a crash of the kernel that had it mounted). The quota is
that file system's size, set when the volume is created, by the first SPAWN naming it.

A kernel mounts a volume's image while an agent uses it, the way it mounts a
workspace (``processes.workspace``: a loop device that detaches itself, a mount
nosuid,nodev in the instance directory, whose shared propagation shows it to sandboxes
forked before it), at ``<instance>/volume.<uid>.<project>.<name>``, and binds its
``data`` directory into each agent's view. Agents using one volume at once share that
one mount: an ext4 file system is never mounted twice. The last agent's end unmounts
it. Two guards keep a second mount away while a first may still write:

- a kernel holds an exclusive ``flock`` on the image while it has it mounted, so
  another kernel on the same state dir gets ``busy``;
- before attaching the image, a kernel waits until no loop device is attached to it
  (a dead kernel's lazily unmounted file system lasts until its agents' views are
  gone; then the device detaches itself).

A kernel that cannot mount disk images (not root, no loop devices, no mkfs.ext4)
refuses a volume (``unavailable``) unless ``allow_degraded``; then the volume is a
plain directory ``<state_dir>/volumes/<uid>/<project>/<name>/`` without a quota, and
``isolation.degraded`` says so. A volume keeps the form it was created in.

A child agent may mount only volumes its spawner has mounted, never writable where its
spawner's is read-only; an agent never creates one and never removes one.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET

from ..errors import Busy, InvalidArgument, NotFound, PermissionDenied, Unavailable
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from ..protocol.requests import VolumesRequest
from ..sandbox.mounts import SYSTEM_DIRS, inside
from ..sandbox.spec import VolumeBind
from .workspace import DATA, Workspaces, loop_backings, mount_image, rmdir_quietly, unmount

if TYPE_CHECKING:
    from .service import ProcessService

log = logging.getLogger("agentos.processes.volumes")

#: The quota of a volume created without a ``size``.
DEFAULT_VOLUME_SIZE = 1 << 30
#: View paths no volume may be mounted on, at or below: the kernel's and the system's own.
RESERVED_PATHS = ("/proc", "/dev", "/sys", "/tmp", *SYSTEM_DIRS)
#: The project directory of volumes of no project (no project name starts with ``_``).
_NO_PROJECT = "_"
#: ``project`` of ``VolumeStore.find``: every project's (no project is called ``*``).
EVERY_PROJECT = "*"
#: How long a mount waits for a loop device still attached to the image (a previous mount's
#: file system, lazily unmounted, lives until the last view holding it is gone).
_DETACH_WAIT_S = 10.0


@dataclass(frozen=True)
class VolumeMount:
    """One entry of a SPAWN's ``volumes``, checked: what to mount where."""

    name: str
    path: str
    #: The quota asked for (bytes); None: the volume's own, or the default for a new one.
    size: int | None
    read_only: bool


@dataclass(frozen=True)
class VolumeGrant:
    """A volume an agent has mounted: what its children may mount, at most as it has it."""

    uid: int
    project: str | None
    name: str
    size: int
    writable: bool


@dataclass
class _Mounted:
    """A volume image this kernel has mounted, and the agents using it."""

    mountpoint: Path
    #: Holds the image's flock while mounted.
    lock: int
    users: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Attached:
    """A volume as one agent gets it."""

    grant: VolumeGrant
    bind: VolumeBind
    #: ``disk`` (its own file system) or ``directory`` (degraded: no quota).
    kind: str

    def report(self) -> dict[str, Any]:
        return {"name": self.grant.name, "path": self.bind.dest, "size": self.grant.size, "kind": self.kind,
                "read_only": self.bind.read_only}


class VolumeStore:
    """The volumes under ``<state_dir>/volumes``, and those this kernel has mounted.

    Everything here blocks (mkfs, mount, waiting for a loop device): call it from a worker thread.
    """

    def __init__(self, state_dir: Path, workspaces: Workspaces) -> None:
        self.root = state_dir / "volumes"
        self.workspaces = workspaces
        self._mounted: dict[tuple[int, str | None, str], _Mounted] = {}
        self._held: dict[str, list[Attached]] = {}
        self._lock = threading.Lock()

    # -- agents' use ---------------------------------------------------------------------

    def attach(self, agent_id: str, mounts: Sequence[VolumeMount], uid: int, project: str | None, *,
               allow_degraded: bool) -> list[Attached]:
        """Create (the first time) and mount ``mounts`` of ``uid``'s ``project`` for ``agent_id``.

        Raises ``InvalidArgument`` (a size that is not the volume's), ``Unavailable`` (no disk
        quota here and no ``allow_degraded``, or a step failed) or ``Busy`` (mounted by another
        kernel); nothing of this agent's is left attached then.
        """
        attached: list[Attached] = []
        self._held[agent_id] = attached
        try:
            with self._lock:
                for i, mount in enumerate(mounts):
                    attached.append(self._attach_one(agent_id, mount, f"volumes[{i}]", uid, project,
                                                     allow_degraded))
        except BaseException:
            self.detach(agent_id)
            raise
        return attached

    def held(self, agent_id: str) -> list[Attached]:
        return self._held.get(agent_id, [])

    def detach(self, agent_id: str) -> None:
        """``agent_id`` has ended: unmount each of its volumes no other agent uses."""
        with self._lock:
            self._held.pop(agent_id, None)
            # By the mounts' users, not the agent's list: an attach that failed half-way counts too.
            for key, mounted in list(self._mounted.items()):
                if agent_id in mounted.users:
                    mounted.users.discard(agent_id)
                    if not mounted.users:
                        self._unmount(key)

    def close(self) -> None:
        """Unmount everything (the kernel stops; its agents have ended)."""
        for agent_id in list(self._held):
            self.detach(agent_id)
        with self._lock:
            for key in list(self._mounted):
                self._unmount(key)

    def degraded(self, volume: Attached) -> list[str]:
        if volume.kind == "disk":
            return []
        return [f"volumes.{volume.grant.name}: a plain directory without a disk quota: {self.workspaces.no_disk}"]

    def _attach_one(self, agent_id: str, mount: VolumeMount, where: str, uid: int, project: str | None,
                    allow_degraded: bool) -> Attached:
        image, directory = self._paths(uid, project, mount.name)
        if not image.exists() and not directory.exists():
            self._create(image, directory, mount.size or DEFAULT_VOLUME_SIZE, where, allow_degraded)
        if image.exists():
            size = image.stat().st_size
            if mount.size is not None and mount.size != size:
                raise InvalidArgument(f"{where}.size: volume {mount.name!r} exists with {size} bytes, not "
                                      f"{mount.size} (a volume keeps the size it was created with; remove it to "
                                      "change that)", field=f"{where}.size")
            kind, source = "disk", self._mount(agent_id, (uid, project, mount.name), image)
        else:
            if not allow_degraded:
                raise Unavailable(f"{where}: volume {mount.name!r} is a plain directory without a disk quota "
                                  "(made by a kernel that had none); set allow_degraded to mount it",
                                  field=f"{where}.name")
            size, kind, source = mount.size or 0, "directory", directory
        grant = VolumeGrant(uid, project, mount.name, size, not mount.read_only)
        return Attached(grant, VolumeBind(str(source), mount.path, mount.read_only), kind)

    def _create(self, image: Path, directory: Path, size: int, where: str, allow_degraded: bool) -> None:
        no_disk = self.workspaces.no_disk
        if no_disk is not None and not allow_degraded:
            raise Unavailable(
                f"{where}: this kernel cannot give a volume a disk quota ({no_disk}); run the kernel as root "
                "on a host with loop devices and mkfs.ext4 (e2fsprogs), or set allow_degraded for a plain "
                "directory without a quota", field=where)
        image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if no_disk is not None:
            directory.mkdir(mode=0o700)
            (directory / DATA).mkdir(mode=0o700)
            return
        # Made under a temporary name: a half-made image never looks like a volume.
        making = image.with_suffix(".making")
        try:
            fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, size)  # sparse: the host's disk holds only what is written
            finally:
                os.close(fd)
            # With a journal: a volume outlives the kernel that had it mounted, crashes included.
            self.workspaces.make_filesystem(making, journal=True)
            os.rename(making, image)
        except OSError as exc:
            making.unlink(missing_ok=True)
            raise Unavailable(f"{where}: cannot make the volume: {exc}", field=where) from None

    def _mount(self, agent_id: str, key: tuple[int, str | None, str], image: Path) -> Path:
        """The volume's ``data`` directory, mounted once for all its users."""
        mounted = self._mounted.get(key)
        if mounted is None:
            mounted = self._mount_image(key, image)
            self._mounted[key] = mounted
        mounted.users.add(agent_id)
        return mounted.mountpoint / DATA

    def _mount_image(self, key: tuple[int, str | None, str], image: Path) -> _Mounted:
        lock = os.open(image, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        mountpoint = self.workspaces.dir / _mount_name(key)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"volume {key[2]!r} is mounted by another kernel on this state dir",
                           volume=key[2]) from None
            _wait_detached(image, key[2])
            self.workspaces.share()
            mountpoint.mkdir(mode=0o700)
            mount_image(image, mountpoint)
            data = mountpoint / DATA
            if not data.is_dir():
                data.mkdir(mode=0o700)
        except OSError as exc:
            unmount(mountpoint)
            rmdir_quietly(mountpoint)
            os.close(lock)
            raise Unavailable(f"cannot mount volume {key[2]!r}: {exc}", volume=key[2]) from None
        except BaseException:
            unmount(mountpoint)
            rmdir_quietly(mountpoint)
            os.close(lock)
            raise
        return _Mounted(mountpoint, lock)

    def _unmount(self, key: tuple[int, str | None, str]) -> None:
        mounted = self._mounted.pop(key)
        unmount(mounted.mountpoint)
        rmdir_quietly(mounted.mountpoint)
        os.close(mounted.lock)

    # -- listing and removal ---------------------------------------------------------------

    def find(self, uid: int | None, project: str | None = EVERY_PROJECT,
             name: str | None = None) -> list[dict[str, Any]]:
        """The volumes on disk of ``uid`` (None: every uid's), of ``project`` (``EVERY_PROJECT``,
        or None: no project's), called ``name`` (None: any), as VOLUMES shows them."""
        found = []
        for uid_dir in _entries(self.root):
            if not uid_dir.name.isdigit() or (uid is not None and uid_dir.name != str(uid)):
                continue
            for project_dir in _entries(uid_dir):
                owner = None if project_dir.name == _NO_PROJECT else project_dir.name
                if project != EVERY_PROJECT and owner != project:
                    continue
                for entry in _entries(project_dir):
                    volume = entry.name.removesuffix(".img")
                    if entry.name.endswith(".making") or (name is not None and volume != name):
                        continue
                    found.append(self._describe(int(uid_dir.name), owner, volume, entry))
        return sorted(found, key=lambda v: (v["uid"], v["project"] or "", v["name"]))

    def _describe(self, uid: int, project: str | None, name: str, entry: Path) -> dict[str, Any]:
        info = entry.stat()
        disk = entry.suffix == ".img"
        users = self._mounted.get((uid, project, name))
        described: dict[str, Any] = {"name": name, "project": project, "uid": uid,
                                     "kind": "disk" if disk else "directory",
                                     "size": info.st_size if disk else None,
                                     "in_use": sorted(users.users) if users is not None else []}
        if disk:
            # What the sparse image takes on the host's disk: at most its size.
            described["allocated"] = info.st_blocks * 512
        if users is not None:
            stats = os.statvfs(users.mountpoint)
            described["used"] = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
            described["free"] = stats.f_bavail * stats.f_frsize
        return described

    def remove(self, uid: int | None, project: str | None, name: str | None) -> list[dict[str, Any]]:
        """Delete the volumes ``find`` names with these arguments; ``Busy`` (removing none) while
        an agent of this kernel uses one of them, or another kernel has one mounted."""
        with self._lock:
            doomed = self.find(uid, project, name)
            using = sorted({agent for v in doomed for agent in v["in_use"]})
            if using:
                raise Busy(f"volume(s) {', '.join(v['name'] for v in doomed if v['in_use'])} are in use by "
                           f"agent(s) {', '.join(using)}: stop them first", agents=using)
            for volume in doomed:
                self._delete(volume)
        return doomed

    def _delete(self, volume: dict[str, Any]) -> None:
        image, directory = self._paths(volume["uid"], volume["project"], volume["name"])
        if volume["kind"] == "disk":
            fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise Busy(f"volume {volume['name']!r} is mounted by another kernel on this state dir",
                               volume=volume["name"]) from None
                image.unlink()
            finally:
                os.close(fd)
        else:
            # The agents' files: rmtree works from descriptors and follows none of their symlinks.
            shutil.rmtree(directory)
        for parent in (image.parent, image.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break  # other volumes still there

    def _paths(self, uid: int, project: str | None, name: str) -> tuple[Path, Path]:
        base = self.root / str(uid) / (project or _NO_PROJECT)
        return base / f"{name}.img", base / name


def _mount_name(key: tuple[int, str | None, str]) -> str:
    """A flat name in the instance directory (whose leftovers a later kernel removes one level
    deep); never an agent id, and read back unambiguously: uid and project have no ``.``."""
    uid, project, name = key
    return f"volume.{uid}.{project or ''}.{name}"


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.is_symlink())
    except FileNotFoundError:
        return []


def _wait_detached(image: Path, name: str) -> None:
    """Until no loop device is attached to ``image`` (a previous mount's file system is gone)."""
    real = os.path.realpath(image)
    deadline = time.monotonic() + _DETACH_WAIT_S
    while real in loop_backings():
        if time.monotonic() > deadline:
            raise Busy(f"volume {name!r} is still attached to a loop device of an earlier mount (a kernel "
                       "that died, whose agents' views still hold it)", volume=name)
        time.sleep(0.02)


def path_problem(path: str) -> str | None:
    """Why ``path`` can never be a volume's mount point (None: it may be, apart from the view's
    other paths): what SPAWN and the manifest both check."""
    # normpath keeps a leading "//" (POSIX leaves its meaning to the system): refused by hand.
    if not path.startswith("/") or os.path.normpath(path) != path or path == "/" or "//" in path:
        return "must be an absolute, normalized path below / (no '..', '.', '//' or trailing '/')"
    reserved = next((r for r in RESERVED_PATHS if inside(path, r)), None)
    if reserved is not None:
        return f"is in {reserved}, which the sandbox provides itself; mount the volume elsewhere"
    return None


def check_mount_points(mounts: Sequence[VolumeMount], taken: Mapping[str, str]) -> None:
    """``InvalidArgument`` for a volume path over (or under) another path of the agent's view;
    ``taken`` maps those view paths to what they are."""
    for i, mount in enumerate(mounts):
        where = f"volumes[{i}].path"
        for path, what in taken.items():
            if inside(mount.path, path) or inside(path, mount.path):
                raise InvalidArgument(f"{where}: {mount.path} overlaps {path} ({what}); a volume's path "
                                      "must be apart from every other path of the view", field=where,
                                      path=mount.path)


class Volumes:
    """The processes service's VOLUMES syscall."""

    def __init__(self, service: ProcessService) -> None:
        self.service = service

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.VOLUMES: self.volumes}

    async def volumes(self, call: Call) -> dict[str, Any]:
        """``{action: ls|inspect|rm, name?, project?, uid?}``.

        An outside client sees and removes its own uid's volumes (an admin, any uid's with
        ``uid``; ``ls`` without it, every uid's). An agent sees only the volumes it has mounted,
        and removes none."""
        request = cast(VolumesRequest, call.request)
        action = "ls" if request.action is UNSET else request.action
        name = None if request.name is UNSET else request.name
        project = EVERY_PROJECT if request.project in (UNSET, None) else (request.project or None)
        if action != "ls" and name is None:
            raise InvalidArgument(f"VOLUMES {action} needs the volume's name", field="name")
        identity = call.identity
        admin = self.service.permissions.is_admin(identity)
        asked = None if request.uid is UNSET else request.uid
        if asked is not None and asked != identity.uid and not admin:
            raise PermissionDenied("uid: only an admin may name another uid's volumes", field="uid")
        store = self.service.volume_store
        loop = self.service.kernel.loop
        if identity.agent_id is not None and not admin:
            if action == "rm":
                raise PermissionDenied("an agent may not remove a volume (its owner, an outside client of "
                                       "its uid, or an admin may)", field="action")
            held = {(v.grant.uid, v.grant.project, v.grant.name) for v in store.held(identity.agent_id)}
            found = await loop.run_in_executor(None, store.find, None, project, name)
            volumes = [v for v in found if (v["uid"], v["project"], v["name"]) in held]
        else:
            owner = asked if asked is not None or (admin and action == "ls") else identity.uid
            volumes = await loop.run_in_executor(None, store.find, owner, project, name)
        if action == "ls":
            return {"volumes": volumes}
        if not volumes:
            raise NotFound(f"no volume {name!r} that you may see", name=name)
        if len(volumes) > 1:
            raise InvalidArgument(f"volume {name!r} exists in several projects "
                                  f"({', '.join(_project_text(v['project']) for v in volumes)}): name one",
                                  field="project")
        [volume] = volumes
        if action == "inspect":
            return volume
        removed = await loop.run_in_executor(None, store.remove, volume["uid"], volume["project"], name)
        return {"removed": removed}

    async def purge(self, uid: int | None, project: str) -> int:
        """PURGE's part: remove ``project``'s volumes of ``uid`` (None: every uid's)."""
        store = self.service.volume_store
        removed = await self.service.kernel.loop.run_in_executor(None, store.remove, uid, project, None)
        return len(removed)


def _project_text(project: str | None) -> str:
    return f"project {project!r}" if project else "no project"

