"""The agent's file-system view: planned as a list of typed mount ops, then built in the child.

Planning (in the caller) turns a spec into ``MountOp``s: the host's system dirs and
this Python installation read-only, a private ``/proc``, a minimal ``/dev``, a
private ``/tmp``, the work dir and any extra binds. Building (in the child, inside
its new mount namespace) mounts a tmpfs root, binds each op into it, makes the
whole tree read-only except the writable ops, and pivots into it, so nothing of
the host is reachable except the binds. A failing op aborts with its destination
as the step, unless optional.
"""
from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentos.sandbox._syscalls import syscalls

__all__ = ["SYSTEM_DIRS", "MountOp", "build_root", "default_system_ops", "plan_mounts", "python_paths"]

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

#: Runs one named setup step, turning its failure into a report for the parent.
Step = Callable[..., Any]


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


# --- the child side: executed inside the new mount namespace ---

def build_root(ops: list[MountOp], new_root: str, step: Step) -> None:
    """Build the agent's root at ``new_root`` from ``ops`` and pivot into it (runs in the child).

    ``new_root`` is an empty directory of the launcher's; the tmpfs mounted on it
    exists only in this mount namespace, and the sources are host paths as they are.
    """
    # Our changes must never propagate back to the host, host unmounts still reach us.
    step("mount propagation", syscalls.mount, None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    step("new root", syscalls.mount, "tmpfs", new_root, "tmpfs", _MOUNT_FLAGS, "mode=0755")
    for op in ops:
        if op.kind != "dev":
            step(f"mount {op.dest}", _APPLY[op.kind], op, new_root)
        else:
            step(f"mount {op.dest}", os.makedirs, new_root + op.dest, 0o755, True)
    step("read-only view", _seal, ops, new_root)
    # After sealing, which makes every mount nodev: device nodes must stay openable.
    for op in ops:
        if op.kind == "dev":
            step(f"mount {op.dest}", _dev, op, new_root)
    step("pivot_root", _enter, new_root)


def _seal(ops: list[MountOp], root: str) -> None:
    """Everything read-only, nosuid and nodev in one call, then writable again where planned.

    Submounts of a writable bind stay read-only.
    """
    syscalls.mount_setattr(root, syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV)
    for op in ops:
        if op.kind in ("bind", "tmpfs") and not op.readonly:
            syscalls.mount_setattr(root + op.dest, 0, syscalls.MOUNT_ATTR_RDONLY, recursive=False)


def _enter(root: str) -> None:
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it
    # takes the whole host tree out of this namespace.
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")


def _bind(op: MountOp, root: str) -> None:
    assert op.source is not None
    try:
        mode = os.stat(op.source).st_mode
    except FileNotFoundError:
        if op.optional:
            return
        raise
    target = root + op.dest
    _mountpoint(target, directory=stat.S_ISDIR(mode))
    syscalls.mount(op.source, target, None, syscalls.MS_BIND | syscalls.MS_REC)


def _tmpfs(op: MountOp, root: str) -> None:
    target = root + op.dest
    _mountpoint(target, directory=True)
    syscalls.mount("tmpfs", target, "tmpfs", _MOUNT_FLAGS, op.options)


def _symlink(op: MountOp, root: str) -> None:
    assert op.source is not None
    target = root + op.dest
    _mountpoint(os.path.dirname(target), directory=True)
    os.symlink(op.source, target)


def _proc(op: MountOp, root: str) -> None:
    target = root + op.dest
    _mountpoint(target, directory=True)
    # Read-only as a whole: /proc/sys, /proc/sysrq-trigger and /proc/irq are writable by
    # uid 0 by file mode alone, capabilities or not.
    syscalls.mount("proc", target, "proc", _MOUNT_FLAGS | syscalls.MS_NOEXEC | syscalls.MS_RDONLY)
    for name in _PROC_MASKED:
        try:
            syscalls.mount("/dev/null", f"{target}/{name}", None, syscalls.MS_BIND)
        except FileNotFoundError:
            pass  # not built into this kernel


def _dev(op: MountOp, root: str) -> None:
    target = root + op.dest
    _mountpoint(target, directory=True)
    syscalls.mount("tmpfs", target, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        node = f"{target}/{name}"
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        syscalls.mount(f"/dev/{name}", node, None, syscalls.MS_BIND)
    for name, link in _DEV_LINKS:
        os.symlink(link, f"{target}/{name}")
    os.mkdir(f"{target}/shm")
    syscalls.mount("tmpfs", f"{target}/shm", "tmpfs", _MOUNT_FLAGS, "mode=1777")
    # Nothing new can be created in /dev itself; the nodes and /dev/shm stay usable.
    syscalls.mount_setattr(target, syscalls.MOUNT_ATTR_RDONLY, recursive=False)


def _mountpoint(path: str, *, directory: bool) -> None:
    """Create what a mount needs to land on, unless the view already has it."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if directory:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


_APPLY = {"bind": _bind, "tmpfs": _tmpfs, "symlink": _symlink, "proc": _proc, "dev": _dev}
