"""Freeze agents' cgroups from inside the event loop, waiting until the freezer is done.

Writing the freeze request returns at once; the kernel then stops each task as it
next leaves the CPU or a system call. v1 shows ``FREEZING`` until the last one has
stopped, v2 flips ``frozen`` in ``cgroup.events``. A task that cannot stop (deep in
uninterruptible sleep) keeps the cgroup freezing: after a few seconds the freeze is
undone and reported, so a pause either holds everything or nothing.
"""
from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Sequence

from .base import AgentCgroup, CgroupError

#: Poll delays grow to this; together the attempts span a few seconds.
_MAX_DELAY = 0.1
_ATTEMPTS = 40


async def freeze(cgroups: Sequence[AgentCgroup],
                 still: Callable[[AgentCgroup], bool] = lambda cgroup: True) -> None:
    """Freeze every cgroup in ``cgroups`` and wait until all are frozen.

    One for which ``still(cgroup)`` turns false while waiting (thawed meanwhile, by a
    KILL) is no longer waited for. Raises ``CgroupError`` (after thawing them all
    again) when the kernel refuses or does not get there in time.
    """
    try:
        for cgroup in cgroups:
            cgroup.freeze()
        delay = 0.001
        for _ in range(_ATTEMPTS):
            pending = [cgroup for cgroup in cgroups
                       if still(cgroup) and not cgroup.removed and not cgroup.frozen()]
            if not pending:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
            for cgroup in pending:
                # Catches tasks forked or woken after the first pass (v1 freezes only what it sees).
                cgroup.freeze()
    except BaseException:
        thaw(cgroups)
        raise
    thaw(cgroups)
    raise CgroupError(errno.EBUSY, "the freezer could not stop every process in time "
                                   f"(agents {[c.agent_id for c in pending]})")


def thaw(cgroups: Sequence[AgentCgroup]) -> None:
    """Thaw each cgroup that still exists; never raises for one already gone."""
    for cgroup in cgroups:
        if cgroup.removed:
            continue
        try:
            cgroup.thaw()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
                raise
