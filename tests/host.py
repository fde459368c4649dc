"""What this host can isolate, found without agentos: the facts its own reports are checked against.

Each answer comes from a different source than the kernel's detection reads, or from a
different way of asking: cgroup mounts from ``/proc/self/mounts`` and ``/proc/cgroups`` (the
kernel parses ``/proc/self/mountinfo``), namespaces by ``unshare(2)`` through libc in a forked
child (the kernel's probe uses ``clone3`` from its compiled module), Landlock and
``mount_setattr`` by raw ``syscall(2)``, seccomp from ``/proc/self/status`` and
``/proc/sys/kernel/seccomp/actions_avail``.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)

#: The limits a cgroup driver enforces, by the controller that enforces each.
LIMIT_CONTROLLERS = ("cpu", "memory", "pids")

#: <sched.h>'s CLONE_NEW* flags (the os module has them only from Python 3.12).
CLONE_NEWUSER = 0x10000000
NAMESPACE_FLAGS = {"pid": 0x20000000, "mount": 0x00020000, "uts": 0x04000000,
                   "ipc": 0x08000000, "net": 0x40000000, "cgroup": 0x02000000,
                   "user": CLONE_NEWUSER}

# Syscall numbers shared by every architecture (allocated after the tables were unified).
_SYS_MOUNT_SETATTR = 442
_SYS_LANDLOCK_CREATE_RULESET = 444
_LANDLOCK_CREATE_RULESET_VERSION = 1
#: The architectures whose seccomp filters agentos ships, by ``uname -m``.
SECCOMP_ARCHES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Cgroups:
    """Where this host mounts its cgroup hierarchies."""

    #: v1 controller -> mount point of the hierarchy it is bound to.
    v1: dict[str, str]
    #: Mount point of the v2 hierarchy, if one is mounted.
    v2: str | None
    #: Controllers the v2 hierarchy's root offers.
    v2_controllers: list[str]

    @property
    def kind(self) -> str:
        if self.v1 and self.v2:
            return "hybrid"
        return "v1" if self.v1 else "v2" if self.v2 else "none"


def cgroups() -> Cgroups:
    # /proc/cgroups: a controller bound to a v1 hierarchy has a non-zero hierarchy id.
    with open("/proc/cgroups") as f:
        rows = [line.split() for line in f if not line.startswith("#")]
    bound = {name for name, hierarchy, _, enabled in rows if hierarchy != "0" and enabled == "1"}
    v1: dict[str, str] = {}
    v2 = None
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mount_point, fstype, options = line.split()[:4]
            if fstype == "cgroup":
                for controller in sorted(bound & set(options.split(","))):
                    v1.setdefault(controller, mount_point)
            elif fstype == "cgroup2" and v2 is None:
                v2 = mount_point
    controllers = sorted(Path(v2, "cgroup.controllers").read_text().split()) if v2 else []
    return Cgroups(v1=v1, v2=v2, v2_controllers=controllers)


def can_unshare(flags: int) -> bool:
    """Whether a child of this process can enter new namespaces of ``flags``; a normal user
    does it inside a new user namespace, as rootless sandboxes are made."""
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _libc.unshare(flags) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def namespaces() -> dict[str, bool]:
    return {name: can_unshare(flag) for name, flag in NAMESPACE_FLAGS.items()}


def landlock_abi() -> int:
    """Landlock's ABI version, 0 if this kernel has no Landlock or it is off."""
    version = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return max(version, 0)


def has_mount_setattr() -> bool:
    # On an fd that is not open the syscall fails with EBADF where it exists, ENOSYS where not.
    _libc.syscall(_SYS_MOUNT_SETATTR, -1, b"", 0, None, 0)
    return ctypes.get_errno() != errno.ENOSYS


def seccomp_filters() -> bool:
    """Whether a process here can install a seccomp filter that answers with an errno."""
    status = Path("/proc/self/status").read_text()
    actions = Path("/proc/sys/kernel/seccomp/actions_avail")
    return ("Seccomp_filters:" in status and os.uname().machine in SECCOMP_ARCHES
            and actions.exists() and "errno" in actions.read_text().split())
