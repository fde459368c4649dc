"""A normal user's cgroups: the v2 subtree systemd delegates to the user's kernel.

Only root may write under a hierarchy's root, but systemd hands a user a subtree of
their own: ``systemd-run --user --scope -p Delegate=yes agentos up FILE`` runs the
command in a scope whose directory, ``cgroup.procs``, ``cgroup.subtree_control`` and
``cgroup.threads`` belong to the user (everything under ``user@UID.service`` does).
A kernel started there finds that cgroup in ``/proc/self/cgroup`` and roots its
``agentos/`` tree in it::

    <delegated>/kernel/                   every process the scope held: the kernel, its zygote,
                                          whoever started it (``agentos up``)
    <delegated>/agentos/<instance>/...    the usual layout (``base.py``)

cgroup v2 lets a cgroup enable controllers for its children only while it holds no
process itself, so the kernel first moves everything in the delegated cgroup into
the ``kernel`` leaf (which is also what systemd asks of a delegated scope), then
enables the controllers the delegation offers. Its stop puts things back as they
were when it alone used the subtree.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import base
from .base import TOP, CgroupError, log, read_ints, read_text
from .detect import LIMIT_CONTROLLERS, Layout

#: The leaf of a delegated cgroup that holds the processes found in it.
KERNEL_LEAF = "kernel"
#: Files systemd hands over with a delegated cgroup, of which the kernel needs these two.
_DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control")
#: Passes over the delegated cgroup's processes: one normally; more while a zygote forks.
_MOVE_PASSES = 20


def user_groups(uid: int) -> frozenset[int]:
    """The groups whose write bits count for ``uid``: this process's when it is ``uid``."""
    if uid != os.geteuid():
        return frozenset()
    return frozenset({os.getegid(), *os.getgroups()})


def may_write(path: Path, uid: int, groups: Collection[int] = ()) -> bool:
    """Whether ``uid`` may write ``path`` (a directory: create in it) by its owner and mode.

    Read from the inode rather than ``access(2)`` so that any uid can be asked about.
    Root is never refused here: where it cannot write, its driver's ``start()`` says why.
    """
    if uid == 0:
        return True
    try:
        info = os.stat(path)
    except OSError:
        return False
    mode = info.st_mode
    need = stat.S_IWUSR | (stat.S_IXUSR if stat.S_ISDIR(mode) else 0)
    if info.st_uid == uid:
        return mode & need == need
    if info.st_gid in groups:
        return mode & (need >> 3) == need >> 3
    return mode & (need >> 6) == need >> 6


def may_create(top: Path, uid: int, groups: Collection[int] = ()) -> bool:
    """Whether ``uid`` may make its kernel's directory in ``top`` (made first if missing)."""
    return may_write(top if top.exists() else top.parent, uid, groups)


def _owner(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"owned by uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}"


@dataclass(frozen=True)
class Delegation:
    """The v2 cgroup delegated to a user's kernel, or why there is none."""

    #: The delegated cgroup the kernel roots ``agentos/`` in; None when there is none.
    root: Path | None = None
    #: The limit controllers it offers (its ``cgroup.controllers``).
    controllers: frozenset[str] = frozenset()
    #: Why there is none (when ``root`` is None).
    reason: str = ""


def is_delegated(directory: Path, uid: int, groups: Collection[int] = ()) -> bool:
    """The directory and the files a delegatee writes are ``uid``'s to write, as systemd's
    ``Delegate=yes`` makes them."""
    return may_write(directory, uid, groups) and all(
        may_write(directory / name, uid, groups) for name in _DELEGATED_FILES)


def find_delegation(layout: Layout, uid: int, groups: Collection[int] = ()) -> Delegation:
    """The cgroup this process runs in, if it is delegated to ``uid``.

    A process an earlier kernel moved into its leaf (a shell of the scope, a second
    kernel) is in ``<delegated>/kernel``: the delegated cgroup is then the parent, so
    that every kernel of the scope shares one ``agentos/`` and finds its dead ones.
    """
    if layout.v2_mount is None:
        return Delegation(reason="no cgroup v2 hierarchy is mounted")
    own = layout.v2_own_dir
    if own is None:
        return Delegation(reason=f"its own cgroup ({layout.v2_own or 'none'}) is not under the v2 mount "
                                 f"{layout.v2_mount}")
    if own.name == KERNEL_LEAF and is_delegated(own.parent, uid, groups):
        own = own.parent
    parts = PurePosixPath(own).parts
    if any(part == TOP and base.is_instance_name(after) for part, after in zip(parts, parts[1:])):
        # An agent's cgroup of another kernel: rearranging it would hide the agent's processes
        # from that kernel's kill and count.
        return Delegation(reason=f"its own cgroup {own} is an agent's, made by an agentos kernel")
    if not is_delegated(own, uid, groups):
        return Delegation(reason=f"its own cgroup {own} is not delegated to uid {uid} ({_owner(own)})")
    offered = frozenset((read_text(own / "cgroup.controllers") or "").split())
    return Delegation(root=own, controllers=offered & set(LIMIT_CONTROLLERS.values()))


def enter_leaf(root: Path) -> bool:
    """Move every process of the delegated cgroup ``root`` into its ``kernel`` leaf; False when
    an earlier kernel of the scope made the leaf (and arranged ``root``) already.

    Processes started before the cgroup driver (the launcher's zygote and the children it
    forks ahead) are in ``root`` too; what they fork after their move lands in the leaf,
    so the passes end.
    """
    leaf = root / KERNEL_LEAF
    made = not leaf.exists()
    base.mkdir(leaf, exist_ok=True)
    for _ in range(_MOVE_PASSES):
        pids = read_ints(root / "cgroup.procs")
        if not pids:
            return made
        for pid in pids:
            try:
                base.write(leaf / "cgroup.procs", str(pid))
            except ProcessLookupError:
                pass  # it ended meanwhile
            except OSError as exc:
                raise CgroupError(exc.errno, f"cannot move process {pid} from the delegated cgroup {root} "
                                             f"into {leaf}: {exc.strerror}") from None
    raise CgroupError(errno.EBUSY, f"processes keep appearing in the delegated cgroup {root}")


def leave_leaf(root: Path, enabled: Collection[str]) -> None:
    """Undo ``enter_leaf`` once the kernel's ``agentos/`` is gone: turn off the controllers it
    enabled in ``root``, move the leaf's processes back, remove the leaf. Left as it is while
    another kernel (or anything else) has a cgroup in ``root``."""
    leaf = root / KERNEL_LEAF
    try:
        others = [entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name != KERNEL_LEAF]
        if others:
            log.debug("leaving %s in place: %s still in %s", leaf, others, root)
            return
        if enabled:
            base.write(root / "cgroup.subtree_control", " ".join(f"-{name}" for name in sorted(enabled)))
        for pid in read_ints(leaf / "cgroup.procs"):
            try:
                base.write(root / "cgroup.procs", str(pid))
            except ProcessLookupError:
                pass
        if not base.rmdir(leaf):
            log.debug("%s not removed: a process is still in it", leaf)
    except OSError as exc:
        log.debug("the delegated cgroup %s not restored: %s", root, exc)
