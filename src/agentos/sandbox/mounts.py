"""The agent's file-system view: planned as a list of typed mount ops, then built in the child.

Planning (in the caller) turns a spec into ``MountOp``s: the host's system dirs and
this Python installation read-only, a private ``/proc``, a minimal ``/dev``, a
private ``/tmp``, the work dir and any extra binds, then the masks. ``view_program``
turns them into primitive steps (mkdir, mount, bind, idmapped bind, symlink,
mount_setattr, pivot_root) that the child runs in C inside its new mount
namespace: a tmpfs root, each op bound into it, the whole tree read-only except
the writable ops, then the pivot, so nothing of the host is reachable except the
binds. A failing op aborts with its destination as the step, unless optional.

Every path of a view is a real path (no symlink in it), and the child follows
no symlink in any of them: a bind source is opened with openat2(RESOLVE_NO_SYMLINKS),
its tree copied from that descriptor and attached to a target reached the same way.
A path checked by the kernel (an agent's SPAWN) that a spawner swapped for a symlink
before its child binds it therefore fails the launch (ELOOP, naming the path) instead
of binding whatever the symlink leads to.

Masks hide host paths that a bind would otherwise show: a directory becomes an
empty read-only directory (a tmpfs of its own only if binds go inside it), a file a
bind of /dev/null. They are mounted after every
bind that could show them, so binding a parent (even ``/``) never reveals them.
Explicit masks (the kernel's socket and state) hide everything beneath them;
the default masks (``/root``, other users' homes, ``/etc/shadow``-class files)
hide what a bind of a parent would show, while a bind *inside* them (this
Python installation under ``/root/.pyenv``, a script directory under
``/home/alice``) is mounted on top of the mask.
"""
from __future__ import annotations

import functools
import glob
import os
import pwd
import stat
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace

from agentos.sandbox._linux import linux
from agentos.sandbox.spec import WORKSPACE_PATH, VolumeBind

__all__ = ["DEFAULT_MASKS", "SYSTEM_DIRS", "MountOp", "View", "default_masks", "default_system_ops", "inside",
           "plan_mounts", "python_paths", "view_program"]

#: Host directories every agent sees read-only (those missing on this host are skipped).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

#: /proc files that show host-wide internals (every task on the host, kernel memory,
#: keys, timers) even inside a pid namespace: masked with /dev/null.
_PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
#: Device nodes bound from the host into the private /dev.
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))

_MOUNT_FLAGS = linux.MS_NOSUID | linux.MS_NODEV

#: Host files and directories no agent sees, whatever it binds (besides other users' homes).
DEFAULT_MASKS = ("/root", "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                 "/etc/security/opasswd", "/etc/ssl/private", "/etc/sudoers", "/etc/sudoers.d")
#: SSH host private keys (the ``.pub`` halves stay visible).
_SSH_HOST_KEYS = "/etc/ssh/ssh_host_*_key"
#: A mask directory only ever holds the mount points of binds inside it.
_MASK_TMPFS = "mode=0755,size=4k"


@dataclass(frozen=True)
class MountOp:
    """One step of the view. ``kind``: bind, tmpfs, proc, dev, symlink (``source`` is its target)
    or mask (``source`` "dir" or "file"; a "dir" with ``options`` holds binds: a tmpfs of its own)."""

    kind: str
    dest: str
    source: str | None = None
    readonly: bool = True
    #: Skip silently when the source does not exist (system dirs vary by distribution).
    optional: bool = False
    #: tmpfs mount options (mode, size).
    options: str | None = None
    #: A bind seen through the idmapping ``View.idmaps[idmap]`` (-1: as it is on the host).
    idmap: int = -1


@dataclass(frozen=True)
class View:
    """The planned view: its ops in order, the idmappings its binds need, what is masked."""

    ops: tuple[MountOp, ...]
    #: (uid, gid) owners of idmapped binds; each is shown to the agent as its own ids.
    idmaps: tuple[tuple[int, int], ...] = ()
    #: Paths inside the view that are masked.
    masked: tuple[str, ...] = ()


def python_paths() -> list[str]:
    """Directories this interpreter and agentos load code from (to bind read-only)."""
    import agentos

    # The package and its compiled modules may live apart (an editable install).
    code = [os.path.dirname(os.path.abspath(agentos.__path__[0])),
            os.path.dirname(os.path.abspath(str(linux.__file__)))]
    interpreter = [sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    candidates = interpreter + code
    # sys.path[0] is the caller's script directory (or cwd), not part of the installation.
    candidates += [p for p in sys.path[0 if sys.flags.safe_path else 1:] if p]
    return [os.path.realpath(p) for p in candidates if os.path.exists(p)]


@functools.lru_cache(maxsize=1)
def default_system_ops() -> tuple[MountOp, ...]:
    """The default read-only view: system dirs and this Python installation (computed once)."""
    ops = [MountOp("bind", d, d, optional=True) for d in SYSTEM_DIRS if os.path.lexists(d)]
    ops += [MountOp("bind", p, p) for p in python_paths()]
    return tuple(_without_covered([_as_symlink(op) for op in ops]))


def plan_mounts(*, system_paths: list[str] | None, readonly_paths: list[str], writable_paths: list[str],
                workdir: str | None, tmp_size: int | None, masked_paths: Iterable[str] = (),
                agent_ids: tuple[int, int] | None = None, workspace: str | int | None = None,
                volumes: Iterable[VolumeBind] = (), base: str | None = None) -> View:
    """The ordered mount ops of one agent's view; parents always come before children.

    ``agent_ids``: the (uid, gid) the agent runs as when that is not the caller's own
    (a root kernel): a bind the agent could not use as that user is idmapped, its
    owner shown as the agent (every writable one, and read-only ones closed to others).
    ``workspace``: a host directory bound writable at ``WORKSPACE_PATH``, or the size of a
    private tmpfs there. ``volumes``: the kernel's directories of named volumes, each bound at its
    own path (read-only or not), idmapped as any bind. ``base``: a template's root directory
    shown read-only under all of it (``_base_ops``).
    """
    if system_paths is None:
        system = list(default_system_ops())
    else:
        system = _without_covered([_as_symlink(MountOp("bind", p, os.path.realpath(p))) for p in system_paths])
    tmp_options = "mode=1777" + (f",size={tmp_size}" if tmp_size else "")
    owners: list[tuple[int, int]] = []
    user = [_user_bind(p, True, agent_ids, owners) for p in readonly_paths]
    user += [_user_bind(p, False, agent_ids, owners) for p in writable_paths]
    if workdir is not None:
        user.append(_user_bind(workdir, False, agent_ids, owners))
    if isinstance(workspace, str):
        # The kernel's own directory, which no agent can reach: resolved here.
        user.append(_user_bind(os.path.realpath(workspace), False, agent_ids, owners, dest=WORKSPACE_PATH))
    elif workspace is not None:
        # Mounted before the agent becomes its own uid: owned by it from the start.
        owner = f",uid={agent_ids[0]},gid={agent_ids[1]}" if agent_ids is not None else ""
        user.append(MountOp("tmpfs", WORKSPACE_PATH, readonly=False, options=f"mode=0700,size={workspace}{owner}"))
    # The kernel's own directories too, resolved here; after the workspace, so never under it.
    user += [_user_bind(os.path.realpath(v.source), v.read_only, agent_ids, owners, dest=v.dest) for v in volumes]
    # One op per destination, the later winning: volumes over workspace over work dir over writable
    # over read-only over the private /tmp over the system view.
    merged = {op.dest: op for op in [*system, MountOp("tmpfs", "/tmp", readonly=False, options=tmp_options), *user]}
    if merged.get("/", MountOp("none", "/")).kind == "bind":
        # The symlinked system dirs are at the top: a bind of / shows the host's own links there.
        merged = {dest: op for dest, op in merged.items() if op.kind != "symlink"}
    if base is not None:
        merged.update({op.dest: op for op in _base_ops(base, [*merged, "/proc", "/dev"])})
    binds = [op for op in merged.values() if op.kind == "bind"]
    # Resolved like the caller's: a mask lands where the secret really is, on a path the
    # child reaches without following a symlink.
    hidden = _masks([os.path.realpath(p) for p in default_masks(binds)], binds)
    forced = _masks([os.path.realpath(p) for p in masked_paths], binds)
    # A bind inside a default mask goes on top of it; nothing goes on top of an explicit one.
    shelters = [m.dest for m in hidden if m.source == "dir"]
    sheltered = [op for op in merged.values() if any(op.dest != d and inside(op.dest, d) for d in shelters)]
    # Only a mask that holds binds needs a tmpfs of its own, for their mount points.
    hidden = [replace(m, options=_MASK_TMPFS) if any(op.dest != m.dest and inside(op.dest, m.dest)
                                                     for op in sheltered) else m for m in hidden]
    under = [op for op in merged.values() if op not in sheltered]
    ops = [MountOp("proc", "/proc"), MountOp("dev", "/dev"), *_by_depth(under), *_by_depth(hidden),
           *_by_depth(sheltered), *_by_depth(forced)]
    return View(tuple(ops), tuple(owners), tuple(sorted(op.dest for op in [*hidden, *forced])))


def _base_ops(base: str, taken: list[str]) -> list[MountOp]:
    """A template root under the view: each entry of ``base`` bound read-only at the same path
    under /, except where the view has a path of its own (``taken``), which wins with all that
    is beneath it. A directory holding a path of the view is not bound but gone into, so its
    other entries show around it, and no mount point is ever made inside the template.
    Symlinks are made again as symlinks (resolved in the view); sockets, FIFOs and devices
    are left out."""
    ops: list[MountOp] = []

    def walk(relative: str) -> None:
        try:
            entries = sorted(os.scandir(base + relative), key=lambda e: e.name)
        except OSError:
            return  # gone, or unreadable even for us: nothing to show
        for entry in entries:
            dest = f"{relative}/{entry.name}"
            if any(inside(dest, path) for path in taken):
                continue
            if entry.is_symlink():
                ops.append(MountOp("symlink", dest, os.readlink(entry.path)))
            elif entry.is_dir(follow_symlinks=False) and any(inside(path, dest) for path in taken):
                walk(dest)
            elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                ops.append(MountOp("bind", dest, entry.path))

    walk("")
    return ops


def default_masks(binds: list[MountOp]) -> list[str]:
    """The default masks that ``binds`` would show (other users' homes only when /home is)."""
    masks = [*DEFAULT_MASKS, *_ssh_host_keys()]
    if _shown("/home", binds):
        mine = _own_home()
        try:
            masks += [p for p in (os.path.join("/home", e) for e in os.listdir("/home")) if p != mine]
        except OSError:
            pass  # no /home: nothing to hide
    return masks


@functools.lru_cache(maxsize=1)
def _ssh_host_keys() -> tuple[str, ...]:
    return tuple(glob.glob(_SSH_HOST_KEYS))


@functools.lru_cache(maxsize=1)
def _own_home() -> str | None:
    """The caller's own home: a rootless kernel's agents run as its user, and may see it if bound."""
    if os.geteuid() == 0:
        return None
    try:
        return os.path.realpath(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return None


def _user_bind(path: str, readonly: bool, agent_ids: tuple[int, int] | None,
               owners: list[tuple[int, int]], dest: str | None = None) -> MountOp:
    """A bind the caller asked for (at ``dest``, else at its own path), idmapped when the agent's
    uid could not use it as it is."""
    idmap = -1
    if agent_ids is not None:
        info = os.stat(path)
        # Others need r-x on a directory, r on a file, to read it; writing always needs owning it.
        needed = (0o005 if stat.S_ISDIR(info.st_mode) else 0o004) if readonly else 0
        if info.st_uid != agent_ids[0] and (not readonly or info.st_mode & needed != needed):
            owner = (info.st_uid, info.st_gid)
            if owner not in owners:
                owners.append(owner)
            idmap = owners.index(owner)
    # Never resolved again here: the caller checked this path as its real path, and a symlink
    # in it now (swapped in since) fails the bind rather than choosing what is bound.
    return MountOp("bind", dest or path, os.path.normpath(path), readonly=readonly, idmap=idmap)


def _masks(paths: Iterable[str], binds: list[MountOp]) -> list[MountOp]:
    """Mask ops for each of ``paths`` (resolved) wherever one of ``binds`` shows it (a path no
    bind shows is not in the view: nothing to hide)."""
    found: dict[str, MountOp] = {}
    for path in paths:
        places = _shown(path, binds)
        if not places:
            continue
        try:
            directory = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            continue  # missing (or unreachable even for us): nothing to show
        for where in places:
            found[where] = MountOp("mask", where, "dir" if directory else "file", optional=True)
    # A mask inside another mask is already hidden.
    return [op for op in found.values() if not any(inside(op.dest, d) and op.dest != d for d in found)]


def _shown(real: str, binds: list[MountOp]) -> list[str]:
    """Where in the view the host path ``real`` (resolved) appears through ``binds``."""
    places = []
    for op in binds:
        assert op.source is not None
        if inside(real, op.source):
            places.append(op.dest.rstrip("/") + real[len(op.source.rstrip("/")):] or "/")
    return places


def _by_depth(ops: list[MountOp]) -> list[MountOp]:
    return sorted(ops, key=lambda op: op.dest.rstrip("/").count("/"))


def _as_symlink(op: MountOp) -> MountOp:
    """Reproduce a symlinked system dir (merged /usr: /bin -> usr/bin) as the same symlink."""
    try:
        if stat.S_ISLNK(os.lstat(op.dest).st_mode):
            return MountOp("symlink", op.dest, os.readlink(op.dest))
    except FileNotFoundError:
        pass
    return op


def _without_covered(ops: list[MountOp]) -> list[MountOp]:
    """Drop read-only binds already inside another read-only bind (and duplicates)."""
    kept: list[MountOp] = []
    binds = sorted({op.dest for op in ops if op.kind == "bind"}, key=len)
    for op in ops:
        if op.kind == "bind" and any(op.dest != d and inside(op.dest, d) for d in binds):
            continue
        if op not in kept:
            kept.append(op)
    return kept


def inside(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or beneath it."""
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


# --- the view program: the ops as primitive steps, run by the child in C ---

class _Program:
    """Encodes view instructions for ``linux.run_view`` (header, then five strings)."""

    def __init__(self) -> None:
        self.code = bytearray()

    def add(self, step: str, op: int, *strings: str | None, n1: int = 0, n2: int = 0, flags: int = 0) -> None:
        self.code += struct.pack("<BBQQ", op, flags, n1, n2)
        for text in (step, *strings, *[None] * (4 - len(strings))):
            self.code += bytes([linux.VIEW_NULL, 0]) if text is None else os.fsencode(text) + b"\0"

    def mount(self, step: str, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None, *, optional: bool = False, make: bool = False) -> None:
        """mount(2) on the directory ``target``, made first if ``make`` and missing."""
        self.add(step, linux.VIEW_MOUNT, source, target, fstype, data, n1=flags,
                 flags=(linux.VIEW_OPTIONAL if optional else 0) | (linux.VIEW_TARGET_DIR if make else 0))

    def mkdirs(self, step: str, path: str, *, mode: int = 0, file: bool = False) -> None:
        """Make the directory ``path`` (an empty file if ``file``) and its parents, and give it
        ``mode`` unless 0."""
        self.add(step, linux.VIEW_MKDIRS, path, n1=mode, flags=linux.VIEW_TARGET_FILE if file else 0)

    def bind(self, step: str, source: str, target: str, *, recursive: bool, idmap: int = -1,
             optional: bool = False, make: int = 0) -> None:
        """``source`` on ``target``, through the user namespace ``idmap`` (an index) unless -1;
        ``make`` (VIEW_TARGET_DIR or VIEW_TARGET_FILE) makes a missing target first."""
        flags = (linux.VIEW_RECURSIVE if recursive else 0) | (linux.VIEW_OPTIONAL if optional else 0) | make
        self.add(step if idmap < 0 else f"idmap {step.removeprefix('mount ')}",
                 linux.VIEW_BIND if idmap < 0 else linux.VIEW_IDMAP, source, target,
                 n1=max(idmap, 0), flags=flags)

    def setattr(self, step: str, path: str, set_: int, clear: int = 0, *, recursive: bool) -> None:
        self.add(step, linux.VIEW_SETATTR, path, n1=set_, n2=clear,
                 flags=linux.VIEW_RECURSIVE if recursive else 0)


@functools.lru_cache(maxsize=256)
def view_program(ops: tuple[MountOp, ...], root: str) -> bytes:
    """The steps that build ``ops`` on ``root`` and pivot into it, for the child to run.

    Cached: agents started with the same view share one program.

    The root is a tmpfs on an empty directory of the launcher's (it exists only in
    the agent's mount namespace); sources are host paths as they are. After every
    op, the whole tree is made read-only, nosuid and nodev in one call and the
    writable ops made writable again (their submounts stay read-only); /dev's device
    nodes are bound after that, so they stay usable.

    Every superblock costs the host a slot in every memory cgroup's shrinker map
    (docs/sandboxes.md), so a view mounts few: unless a bind of / covers it, the root
    tmpfs itself holds /dev (unless a bind lies at or under it; a read-only directory:
    device nodes bound on empty files, symlinks), /tmp and /dev/shm (directories bound on
    themselves to be writable alone, sharing the root's size: /tmp's limit) and the one
    empty directory every mask without a bind inside it shows (the root's /proc, before
    proc is mounted there).
    """
    p = _Program()
    # Our changes must never propagate back to the host, host unmounts still reach us.
    p.mount("mount propagation", None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    own = not any(op.kind == "bind" and op.dest in ("/", "/proc") for op in ops)
    p.mount("new root", "tmpfs", root, "tmpfs", _MOUNT_FLAGS, "mode=0755" + (_tmp_size(ops) if own else ""))
    if own:
        p.mkdirs("mount /proc", root + "/proc")  # the empty directory masks show
    # A bind at or under /dev would lie on the root's /dev (and /dev/shm, made writable once
    # sealed, would be the host's): such a view gets a tmpfs /dev that covers it.
    own_dev = own and not any(op.kind != "dev" and inside(op.dest, "/dev") for op in ops)
    for op in ops:
        if op.kind != "proc":
            _PLAN[op.kind](p, op, root, own_dev if op.kind == "dev" else own)
    for op in ops:
        if op.kind == "proc":  # after the masks: they bind the directory it covers
            _proc(p, op, root)
    p.setattr("read-only view", root, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID
              | linux.MOUNT_ATTR_NODEV, recursive=True)
    masked = {op.dest for op in ops if op.kind == "mask"}
    for op in ops:
        # A mask on a writable bind's own path is what the path shows: it stays read-only.
        if op.kind in ("bind", "tmpfs") and not op.readonly and op.dest not in masked:
            p.setattr("read-only view", root + op.dest, 0, linux.MOUNT_ATTR_RDONLY, recursive=False)
    for op in ops:
        if op.kind == "dev":
            _dev(p, op, root, own_dev)
    p.add("pivot_root", linux.VIEW_PIVOT, root)
    return bytes(p.code)


def _tmp_size(ops: tuple[MountOp, ...]) -> str:
    """The private /tmp's size option (",size=N"), for the root tmpfs that holds it."""
    for op in ops:
        if op.kind == "tmpfs" and op.dest == "/tmp" and op.options:
            return "".join(f",{option}" for option in op.options.split(",") if option.startswith("size="))
    return ""


def _own_dir(p: _Program, step: str, target: str) -> None:
    """A world-writable (sticky) directory of the root tmpfs, bound on itself: a mount of its
    own, made writable once the view is sealed."""
    p.mkdirs(step, target, mode=0o1777)
    p.bind(step, target, target, recursive=False)


def _bind(p: _Program, op: MountOp, root: str, own: bool) -> None:
    assert op.source is not None
    step, target = f"mount {op.dest}", root + op.dest
    try:
        directory = stat.S_ISDIR(os.stat(op.source).st_mode)
    except FileNotFoundError:
        if op.optional:
            return
        directory = True  # the mount below reports the missing source
    p.bind(step, op.source, target, recursive=True, idmap=op.idmap,
           make=linux.VIEW_TARGET_DIR if directory else linux.VIEW_TARGET_FILE)


def _mask(p: _Program, op: MountOp, root: str, own: bool) -> None:
    # Mounted on what the binds show (never created: the binds are still writable here);
    # gone since planning means nothing left to hide, a symlink in its way fails the launch.
    step, target = f"mask {op.dest}", root + op.dest
    if op.source != "dir":
        p.bind(step, "/dev/null", target, recursive=False, optional=True)
    elif own and op.options is None:
        p.bind(step, root + "/proc", target, recursive=False, optional=True)
    else:
        p.mount(step, "tmpfs", target, "tmpfs", _MOUNT_FLAGS | linux.MS_NOEXEC, op.options or _MASK_TMPFS,
                optional=True)


def _tmpfs(p: _Program, op: MountOp, root: str, own: bool) -> None:
    if own and op.dest == "/tmp":
        _own_dir(p, f"mount {op.dest}", root + op.dest)
    else:
        p.mount(f"mount {op.dest}", "tmpfs", root + op.dest, "tmpfs", _MOUNT_FLAGS, op.options, make=True)


def _symlink(p: _Program, op: MountOp, root: str, own: bool) -> None:
    p.add(f"mount {op.dest}", linux.VIEW_SYMLINK, op.source, root + op.dest)


def _proc(p: _Program, op: MountOp, root: str) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    # Read-only as a whole: /proc/sys, /proc/sysrq-trigger and /proc/irq are writable by
    # uid 0 by file mode alone, capabilities or not.
    p.mount(step, "proc", target, "proc", _MOUNT_FLAGS | linux.MS_NOEXEC | linux.MS_RDONLY, make=True)
    for name in _PROC_MASKED:
        p.bind(step, "/dev/null", f"{target}/{name}", recursive=False, optional=True)


def _dev_mountpoint(p: _Program, op: MountOp, root: str, own: bool) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    p.mkdirs(step, target)  # the device nodes once the view is sealed
    if own:
        # Made while the root is writable: once sealed, nothing new can be created in /dev.
        for name in _DEV_NODES:
            p.mkdirs(step, f"{target}/{name}", file=True)
        for name, link in _DEV_LINKS:
            p.add(step, linux.VIEW_SYMLINK, link, f"{target}/{name}")
        _own_dir(p, step, f"{target}/shm")


def _dev(p: _Program, op: MountOp, root: str, own: bool) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    if own:
        for name in _DEV_NODES:
            p.bind(step, f"/dev/{name}", f"{target}/{name}", recursive=False)
        p.setattr(step, f"{target}/shm", 0, linux.MOUNT_ATTR_RDONLY, recursive=False)
        return
    p.mount(step, "tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        p.bind(step, f"/dev/{name}", f"{target}/{name}", recursive=False, make=linux.VIEW_TARGET_FILE)
    for name, link in _DEV_LINKS:
        p.add(step, linux.VIEW_SYMLINK, link, f"{target}/{name}")
    p.mount(step, "tmpfs", f"{target}/shm", "tmpfs", _MOUNT_FLAGS, "mode=1777", make=True)
    # Nothing new can be created in /dev itself; the nodes and /dev/shm stay usable.
    p.setattr(step, target, linux.MOUNT_ATTR_RDONLY, recursive=False)


_PLAN = {"bind": _bind, "tmpfs": _tmpfs, "symlink": _symlink, "dev": _dev_mountpoint, "mask": _mask}
