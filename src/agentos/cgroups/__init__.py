"""Per-agent cgroups: detect the host layout, then limit, measure and kill agent trees.

``open_driver()`` picks the driver for this host (v2, v1, or none) and every
driver answers the same verbs: ``create(agent_id, limits, parent=None)`` returns
an ``AgentCgroup`` with ``attach(pid)``, ``procs()``, ``stats()``,
``oom_kills()``, ``oom_killed()``, ``kill()``, ``freeze()``, ``thaw()`` and ``remove()``. A child agent's cgroup is made
inside its parent's, so the parent's limits bound the whole subtree; the verbs
cover one agent's own processes, never its child agents'.
"""
from __future__ import annotations

import asyncio
import os

from .base import (
    LEAF,
    TOP,
    AgentCgroup,
    CgroupDriver,
    CgroupError,
    CgroupStats,
    instance_name,
)
from .delegate import KERNEL_LEAF, Delegation, find_delegation, may_create, user_groups
from .detect import Layout, detect
from .freezer import freeze, thaw
from .limits import Limits
from .none import NoDriver
from .reap import Cleanup, destroy, remove_stale
from .v1 import V1Driver
from .v2 import V2Driver

__all__ = ["KERNEL_LEAF", "LEAF", "TOP", "AgentCgroup", "CgroupDriver", "CgroupError", "CgroupStats", "Cleanup",
           "Delegation", "Layout", "Limits", "NoDriver", "V1Driver", "V2Driver", "clean_dead_kernels", "destroy",
           "detect", "freeze", "find_delegation", "instance_name", "open_driver", "remove_stale", "thaw"]


def open_driver(layout: Layout | None = None, instance: str | None = None, uid: int | None = None) -> CgroupDriver:
    """The driver a kernel run by ``uid`` (default: this process's) uses on ``layout`` (detected
    if not given); call ``start()`` on it next.

    Root (or a user given ``agentos/`` in each hierarchy) gets the hierarchy that holds the
    most limit controllers. A normal user otherwise gets the v2 cgroup systemd delegated to
    it, with whatever controllers the delegation offers, or none with the reason why.
    """
    layout = detect() if layout is None else layout
    uid = os.geteuid() if uid is None else uid
    groups = user_groups(uid)
    choice = layout.driver_name()
    if choice == "none":
        return NoDriver("no cgroup hierarchy is mounted", instance)
    if choice == "v2":
        assert layout.v2_mount is not None
        driver: CgroupDriver = V2Driver(layout.v2_mount, layout.v2_controllers, instance)
    else:
        driver = V1Driver(layout.v1_mounts, instance)
    tops = [root / TOP for root in driver.roots]
    if all(may_create(top, uid, groups) for top in tops):
        return driver
    delegation = find_delegation(layout, uid, groups)
    if delegation.root is not None:
        return V2Driver(delegation.root, delegation.controllers, instance, delegated=True)
    return NoDriver(f"uid {uid} may not create cgroups in {', '.join(map(str, tops))}, and {delegation.reason}",
                    instance)


def clean_dead_kernels(driver: CgroupDriver | None = None, instance: str | None = None) -> Cleanup:
    """Outside any kernel (``agentos down``, ``doctor --fix``, a kernel's guardian for its
    ``instance`` only): remove the cgroups kernels that died left behind, as a starting kernel
    does. Live kernels' subtrees are never touched."""
    driver = open_driver() if driver is None else driver
    return asyncio.run(remove_stale(driver, driver.stale(instance)))
