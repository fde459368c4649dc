"""Which namespaces an agent is born into, and the per-namespace setup done inside them.

The child is created by ``clone3`` directly inside its pid, mount, uts, ipc and
(unless it shares the host's network) net namespaces, plus a user namespace when
rootless, so it is pid 1 of its own pid namespace: when it exits, the kernel kills
everything it started. The cgroup namespace is entered later, from the child, once
the parent has moved it into its cgroup, so that cgroup becomes its root.
"""
from __future__ import annotations

from agentos.sandbox._linux import linux

__all__ = ["NAMESPACES", "clone_flags", "enter_cgroup_namespace", "loopback_up", "set_hostname"]

#: Namespace name -> its CLONE_NEW* flag, in the order reported by ``isolation``.
NAMESPACES = {
    "user": linux.CLONE_NEWUSER,
    "pid": linux.CLONE_NEWPID,
    "mount": linux.CLONE_NEWNS,
    "uts": linux.CLONE_NEWUTS,
    "ipc": linux.CLONE_NEWIPC,
    "net": linux.CLONE_NEWNET,
    "cgroup": linux.CLONE_NEWCGROUP,
}


def clone_flags(names: list[str]) -> int:
    """The clone flags creating ``names`` at birth (cgroup is entered later, see module doc)."""
    flags = 0
    for name in names:
        if name != "cgroup":
            flags |= NAMESPACES[name]
    return flags


def enter_cgroup_namespace() -> None:
    """Make the current cgroup the root of this process's cgroup view (runs in the child)."""
    linux.unshare(linux.CLONE_NEWCGROUP)


def set_hostname(name: str) -> None:
    """Set the hostname of the agent's own UTS namespace (runs in the child)."""
    linux.sethostname(name)


def loopback_up() -> None:
    """A new network namespace starts with loopback down; bring it up (runs in the child)."""
    linux.set_link_up("lo")
