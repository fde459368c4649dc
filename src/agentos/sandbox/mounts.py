"""The agent's file-system view: planned as a list of typed mount ops, then built in the child.

Planning (in the caller) turns a spec into ``MountOp``s: the host's system dirs and
this Python installation read-only, a private ``/proc``, a minimal ``/dev``, a
private ``/tmp``, the work dir and any extra binds. ``view_program`` turns them
into primitive steps (mkdir, mount, symlink, mount_setattr, pivot_root) that the
child runs in C inside its new mount namespace: a tmpfs root, each op bound
into it, the whole tree read-only except the writable ops, then the pivot, so
nothing of the host is reachable except the binds. A failing op aborts with its
destination as the step, unless optional.
"""
from __future__ import annotations

import functools
import os
import stat
import struct
import sys
from dataclasses import dataclass

from agentos.sandbox._syscalls import syscalls

__all__ = ["SYSTEM_DIRS", "MountOp", "default_system_ops", "plan_mounts", "python_paths", "view_program"]

#: Host directories every agent sees read-only (those missing on this host are skipped).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

#: /proc files that show host-wide internals (every task on the host, kernel memory,
#: keys, timers) even inside a pid namespace: masked with /dev/null.
_PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
#: Device nodes bound from the host into the private /dev.
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))

_MOUNT_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV


@dataclass(frozen=True)
class MountOp:
    """One step of the view. ``kind``: bind, tmpfs, proc, dev or symlink (``source`` is its target)."""

    kind: str
    dest: str
    source: str | None = None
    readonly: bool = True
    #: Skip silently when the source does not exist (system dirs vary by distribution).
    optional: bool = False
    #: tmpfs mount options (mode, size).
    options: str | None = None


def python_paths() -> list[str]:
    """Directories this interpreter and agentos load code from (to bind read-only)."""
    import agentos

    # The package and its compiled modules may live apart (an editable install).
    code = [os.path.dirname(os.path.abspath(agentos.__path__[0])),
            os.path.dirname(os.path.abspath(str(syscalls.__file__)))]
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
                workdir: str | None, tmp_size: int | None) -> list[MountOp]:
    """The ordered mount ops of one agent's view; parents always come before children."""
    if system_paths is None:
        system = list(default_system_ops())
    else:
        system = _without_covered([_as_symlink(MountOp("bind", p, p)) for p in system_paths])
    tmp_options = "mode=1777" + (f",size={tmp_size}" if tmp_size else "")
    user = [MountOp("bind", p, p) for p in readonly_paths]
    user += [MountOp("bind", p, p, readonly=False) for p in writable_paths]
    if workdir is not None:
        user.append(MountOp("bind", workdir, workdir, readonly=False))
    # One op per destination, the later winning: work dir over writable over read-only
    # over the private /tmp over the system view.
    merged = {op.dest: op for op in [*system, MountOp("tmpfs", "/tmp", readonly=False, options=tmp_options), *user]}
    # Parents first: a bind inside /tmp or inside /usr must land on top of it.
    ops = sorted(merged.values(), key=lambda op: op.dest.rstrip("/").count("/"))
    return [MountOp("proc", "/proc"), MountOp("dev", "/dev")] + ops


def _as_symlink(op: MountOp) -> MountOp:
    """Reproduce a symlinked system dir (merged /usr: /bin -> usr/bin) as the same symlink."""
    assert op.source is not None
    try:
        if stat.S_ISLNK(os.lstat(op.source).st_mode):
            return MountOp("symlink", op.dest, os.readlink(op.source))
    except FileNotFoundError:
        pass
    return op


def _without_covered(ops: list[MountOp]) -> list[MountOp]:
    """Drop read-only binds already inside another read-only bind (and duplicates)."""
    kept: list[MountOp] = []
    binds = sorted({op.dest for op in ops if op.kind == "bind"}, key=len)
    for op in ops:
        if op.kind == "bind" and any(op.dest != d and _inside(op.dest, d) for d in binds):
            continue
        if op not in kept:
            kept.append(op)
    return kept


def _inside(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


# --- the view program: the ops as primitive steps, run by the child in C ---

class _Program:
    """Encodes view instructions for ``syscalls.run_view`` (header, then five strings)."""

    def __init__(self) -> None:
        self.code = bytearray()

    def add(self, step: str, op: int, *strings: str | None, n1: int = 0, n2: int = 0, flags: int = 0) -> None:
        self.code += struct.pack("<BBQQ", op, flags, n1, n2)
        for text in (step, *strings, *[None] * (4 - len(strings))):
            self.code += bytes([syscalls.VIEW_NULL, 0]) if text is None else os.fsencode(text) + b"\0"

    def mount(self, step: str, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None, *, optional: bool = False) -> None:
        self.add(step, syscalls.VIEW_MOUNT, source, target, fstype, data, n1=flags,
                 flags=syscalls.VIEW_OPTIONAL if optional else 0)

    def mkdirs(self, step: str, path: str) -> None:
        self.add(step, syscalls.VIEW_MKDIRS, path)

    def setattr(self, step: str, path: str, set_: int, clear: int = 0, *, recursive: bool) -> None:
        self.add(step, syscalls.VIEW_SETATTR, path, n1=set_, n2=clear,
                 flags=syscalls.VIEW_RECURSIVE if recursive else 0)


@functools.lru_cache(maxsize=256)
def view_program(ops: tuple[MountOp, ...], root: str) -> bytes:
    """The steps that build ``ops`` on ``root`` and pivot into it, for the child to run.

    Cached: agents started with the same view share one program.

    The root is a tmpfs on an empty directory of the launcher's (it exists only in
    the agent's mount namespace); sources are host paths as they are. After every
    op, the whole tree is made read-only, nosuid and nodev in one call and the
    writable ops made writable again (their submounts stay read-only); /dev comes
    after that, so its device nodes stay usable.
    """
    p = _Program()
    # Our changes must never propagate back to the host, host unmounts still reach us.
    p.mount("mount propagation", None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    p.mount("new root", "tmpfs", root, "tmpfs", _MOUNT_FLAGS, "mode=0755")
    for op in ops:
        _PLAN[op.kind](p, op, root)
    p.setattr("read-only view", root, syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOSUID
              | syscalls.MOUNT_ATTR_NODEV, recursive=True)
    for op in ops:
        if op.kind in ("bind", "tmpfs") and not op.readonly:
            p.setattr("read-only view", root + op.dest, 0, syscalls.MOUNT_ATTR_RDONLY, recursive=False)
    for op in ops:
        if op.kind == "dev":
            _dev(p, op, root)
    p.add("pivot_root", syscalls.VIEW_PIVOT, root)
    return bytes(p.code)


def _bind(p: _Program, op: MountOp, root: str) -> None:
    assert op.source is not None
    step, target = f"mount {op.dest}", root + op.dest
    try:
        directory = stat.S_ISDIR(os.stat(op.source).st_mode)
    except FileNotFoundError:
        if op.optional:
            return
        directory = True  # the mount below reports the missing source
    p.add(step, syscalls.VIEW_MKDIRS if directory else syscalls.VIEW_MKFILE, target)
    p.mount(step, op.source, target, None, syscalls.MS_BIND | syscalls.MS_REC)


def _tmpfs(p: _Program, op: MountOp, root: str) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    p.mkdirs(step, target)
    p.mount(step, "tmpfs", target, "tmpfs", _MOUNT_FLAGS, op.options)


def _symlink(p: _Program, op: MountOp, root: str) -> None:
    p.add(f"mount {op.dest}", syscalls.VIEW_SYMLINK, op.source, root + op.dest)


def _proc(p: _Program, op: MountOp, root: str) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    p.mkdirs(step, target)
    # Read-only as a whole: /proc/sys, /proc/sysrq-trigger and /proc/irq are writable by
    # uid 0 by file mode alone, capabilities or not.
    p.mount(step, "proc", target, "proc", _MOUNT_FLAGS | syscalls.MS_NOEXEC | syscalls.MS_RDONLY)
    for name in _PROC_MASKED:
        p.mount(step, "/dev/null", f"{target}/{name}", None, syscalls.MS_BIND, optional=True)


def _dev_mountpoint(p: _Program, op: MountOp, root: str) -> None:
    p.mkdirs(f"mount {op.dest}", root + op.dest)  # the rest once the view is sealed


def _dev(p: _Program, op: MountOp, root: str) -> None:
    step, target = f"mount {op.dest}", root + op.dest
    p.mount(step, "tmpfs", target, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        p.add(step, syscalls.VIEW_MKFILE, f"{target}/{name}")
        p.mount(step, f"/dev/{name}", f"{target}/{name}", None, syscalls.MS_BIND)
    for name, link in _DEV_LINKS:
        p.add(step, syscalls.VIEW_SYMLINK, link, f"{target}/{name}")
    p.mkdirs(step, f"{target}/shm")
    p.mount(step, "tmpfs", f"{target}/shm", "tmpfs", _MOUNT_FLAGS, "mode=1777")
    # Nothing new can be created in /dev itself; the nodes and /dev/shm stay usable.
    p.setattr(step, target, syscalls.MOUNT_ATTR_RDONLY, recursive=False)


_PLAN = {"bind": _bind, "tmpfs": _tmpfs, "symlink": _symlink, "proc": _proc, "dev": _dev_mountpoint}
