"""Kill and remove a cgroup from inside the event loop, without ever blocking it."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from .base import AgentCgroup, log

#: Retry delays grow to this; together the attempts span a few seconds.
_MAX_DELAY = 0.2
_ATTEMPTS = 40


async def destroy(cgroup: AgentCgroup, on_empty: Callable[[], None] | None = None) -> bool:
    """SIGKILL everything in ``cgroup`` until it is empty, then remove it.

    ``on_empty`` runs once the cgroup is empty and before it is removed: the last
    moment its counters (peak memory, CPU time, OOM kills) can be read. Returns
    False (and logs) if processes still linger after every attempt, for example
    a task stuck in uninterruptible sleep.
    """
    delay = 0.005
    for _ in range(_ATTEMPTS):
        if cgroup.procs():
            cgroup.kill()
        else:
            if on_empty is not None:
                on_empty()
                on_empty = None
            if cgroup.remove():
                return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)
    log.error("cgroup of agent %s still busy after kill: %s", cgroup.agent_id, cgroup.procs())
    return False
