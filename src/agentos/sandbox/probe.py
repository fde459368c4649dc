"""What isolation this host supports, found by trying it (for HELLO and ``agentos doctor``).

Configuration files lie (a sysctl may allow user namespaces that AppArmor then
strips of every capability), so each namespace is probed by creating it in a
short-lived child that also performs the first mounts a sandbox needs.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from agentos.sandbox import landlock, seccomp, userns
from agentos.sandbox._linux import linux
from agentos.sandbox.namespaces import NAMESPACES

__all__ = ["HostSupport", "probe"]


@dataclass(frozen=True)
class HostSupport:
    """The result of ``probe()``."""

    arch: str
    root: bool
    #: Namespaces the launcher can create here (user ones included when rootless).
    namespaces: dict[str, bool] = field(default_factory=dict)
    #: Whether an unprivileged process here can create a working user namespace.
    user_namespaces: bool = False
    #: The new mount API needed for recursive read-only binds.
    mount_setattr: bool = False
    seccomp: bool = False
    landlock_abi: int = 0
    #: Why something is unavailable, by feature.
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (HELLO capabilities, ``agentos doctor``)."""
        return asdict(self)


@functools.lru_cache(maxsize=1)
def probe() -> HostSupport:
    """Probe this host once per process (a few forks, a few milliseconds)."""
    notes: dict[str, str] = {}
    root = os.geteuid() == 0
    rootless = userns.wants_user_namespace(None)
    base = linux.CLONE_NEWUSER if rootless else 0
    namespaces: dict[str, bool] = {}
    # One child tries it all (the common case: everything works); only a failure costs more forks.
    everything = _try_child(base | linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS
                            | linux.CLONE_NEWIPC | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP,
                            setattr_probe=True)
    for name, flag in NAMESPACES.items():
        if name == "user":
            continue
        error = everything and _try_child(base | flag)
        namespaces[name] = not error
        if error:
            notes[name] = error
    # Rootless, "everything" already ran inside a user namespace.
    user_error = "" if rootless and not everything else _try_child(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
    if user_error:
        notes["user"] = user_error
    namespaces["user"] = not user_error
    mount_error = everything and _try_child(base | linux.CLONE_NEWNS, setattr_probe=True)
    if mount_error:
        notes["mount_setattr"] = mount_error
    seccomp_ok = seccomp.supported() and _seccomp_available(notes)
    abi = landlock.abi()
    if not abi:
        notes["landlock"] = "Landlock is not enabled in this kernel (or it is off at boot)"
    return HostSupport(arch=linux.ARCH, root=root, namespaces=namespaces, user_namespaces=not user_error,
                       mount_setattr=not mount_error, seccomp=seccomp_ok, landlock_abi=abi, notes=notes)


def _seccomp_available(notes: dict[str, str]) -> bool:
    try:
        return linux.seccomp_action_available(linux.SECCOMP_RET_ERRNO)
    except OSError as exc:
        notes["seccomp"] = str(exc)
        return False


def _try_child(flags: int, *, setattr_probe: bool = False) -> str:
    """Create a child in ``flags``' namespaces; '' if it could work there, else why not."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        pid, pidfd = linux.clone3(flags)
    except OSError as exc:
        return str(exc)
    if pid == 0:
        os._exit(_child_checks(flags, uid, gid, setattr_probe))
    try:
        status = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    finally:
        os.close(pidfd)
    assert status is not None  # without WNOHANG waitid returns a result
    if status.si_code == os.CLD_EXITED and status.si_status == 0:
        return ""
    return f"a child in these namespaces could not set up: {os.strerror(status.si_status)}"


def _child_checks(flags: int, uid: int, gid: int, setattr_probe: bool) -> int:
    try:
        if flags & linux.CLONE_NEWUSER:
            userns.map_self(uid, gid)
        if flags & linux.CLONE_NEWNS:
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
            linux.mount("tmpfs", "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV)
            if setattr_probe:
                linux.mount_setattr("/tmp", linux.MOUNT_ATTR_RDONLY)
        if flags & linux.CLONE_NEWNET:
            linux.set_link_up("lo")
        if flags & linux.CLONE_NEWUTS:
            linux.sethostname("probe")
        return 0
    except OSError as exc:
        return exc.errno or 1
    except BaseException:  # noqa: BLE001 - any failure means: not usable here
        return 1
