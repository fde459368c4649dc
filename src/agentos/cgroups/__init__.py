"""Per-agent cgroups: detect the host layout, then limit, measure and kill agent trees.

``open_driver()`` picks the driver for this host (v2, v1, or none) and every
driver answers the same verbs: ``create(agent_id, limits, parent=None)`` returns
an ``AgentCgroup`` with ``attach(pid)``, ``procs()``, ``stats()``,
``oom_killed()``, ``kill()``, ``freeze()``, ``thaw()`` and ``remove()``. A child agent's cgroup is made
inside its parent's, so the parent's limits bound the whole subtree; the verbs
cover one agent's own processes, never its child agents'.
"""
from __future__ import annotations

import asyncio

from .base import (
    LEAF,
    TOP,
    AgentCgroup,
    CgroupDriver,
    CgroupError,
    CgroupStats,
    instance_name,
)
from .detect import Layout, detect
from .freezer import freeze, thaw
from .limits import Limits
from .none import NoDriver
from .reap import Cleanup, destroy, remove_stale
from .v1 import V1Driver
from .v2 import V2Driver

__all__ = ["LEAF", "TOP", "AgentCgroup", "CgroupDriver", "CgroupError", "CgroupStats", "Cleanup", "Layout",
           "Limits", "NoDriver", "V1Driver", "V2Driver", "clean_dead_kernels", "destroy", "detect", "freeze",
           "instance_name", "open_driver", "remove_stale", "thaw"]


def open_driver(layout: Layout | None = None, instance: str | None = None) -> CgroupDriver:
    """The driver for ``layout`` (detected if not given); call ``start()`` on it next."""
    layout = detect() if layout is None else layout
    choice = layout.driver_name()
    if choice == "v2":
        assert layout.v2_mount is not None
        return V2Driver(layout.v2_mount, layout.v2_controllers, instance)
    if choice == "v1":
        return V1Driver(layout.v1_mounts, instance)
    return NoDriver("no cgroup hierarchy is mounted", instance)


def clean_dead_kernels(driver: CgroupDriver | None = None) -> Cleanup:
    """Outside any kernel (``agentos down``, ``doctor --fix``): remove the cgroups kernels that
    died left behind, as a starting kernel does. Live kernels' subtrees are never touched."""
    driver = open_driver() if driver is None else driver
    return asyncio.run(remove_stale(driver, driver.stale()))
