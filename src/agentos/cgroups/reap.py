"""Kill and remove cgroups from inside the event loop, without ever blocking it: one agent's
when it ends, and every cgroup that kernels which died (``kill -9``) left behind."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from .base import AgentCgroup, CgroupDriver, log

#: Retry delays grow to this; together the attempts span a few seconds.
_MAX_DELAY = 0.2
_ATTEMPTS = 40


async def destroy(cgroup: AgentCgroup, on_empty: Callable[[], None] | None = None,
                  executor: Executor | None = None) -> bool:
    """SIGKILL everything in ``cgroup`` until it is empty, then remove it.

    ``on_empty`` runs before each attempt to remove it, the last time once it is empty: the
    last moment its counters (peak memory, CPU time, OOM kills) can be read. The first attempt
    is made at once, without reading whether processes remain: an ended agent's cgroup is
    empty as a rule (a sandboxed agent's whole tree ends with its pid namespace's init), and
    a process still inside makes the removal fail (``EBUSY``) and the kill loop start.

    With ``executor``, each attempt (reading, killing, removing: on cgroup v1 a dozen control
    files an agent) runs there and the loop only waits. Returns False (and logs) if processes
    still linger after every attempt, for example a task stuck in uninterruptible sleep.
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    for attempt in range(_ATTEMPTS):
        step = _kill_or_remove if attempt else _remove
        if executor is None:
            removed = step(cgroup, on_empty)
        else:
            removed = await loop.run_in_executor(executor, step, cgroup, on_empty)
        if removed:
            return True
        if attempt:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
    log.error("cgroup of agent %s still busy after kill: %s", cgroup.agent_id, cgroup.procs())
    return False


def _remove(cgroup: AgentCgroup, on_empty: Callable[[], None] | None) -> bool:
    if on_empty is not None:
        on_empty()
    return cgroup.remove()


def _kill_or_remove(cgroup: AgentCgroup, on_empty: Callable[[], None] | None) -> bool:
    if cgroup.procs():
        cgroup.kill()
        return False
    return _remove(cgroup, on_empty)


@dataclass
class Cleanup:
    """What ``remove_stale`` did: agent cgroups of dead kernels removed, and those it could not."""

    removed: list[str] = field(default_factory=list)
    #: ``<agent id>: <why>`` for each one left (still busy, or not ours to remove).
    failed: list[str] = field(default_factory=list)


async def remove_stale(driver: CgroupDriver, stale: Sequence[AgentCgroup]) -> Cleanup:
    """Kill what runs in ``stale`` (``driver.stale()``'s answer), remove those cgroups and then
    the dead kernels' emptied instance directories. One failure never stops the others."""
    results = await asyncio.gather(*(destroy(cgroup) for cgroup in stale), return_exceptions=True)
    report = Cleanup()
    for cgroup, result in zip(stale, results):
        if result is True:
            report.removed.append(cgroup.agent_id)
        else:
            report.failed.append(f"{cgroup.agent_id}: {result if isinstance(result, BaseException) else 'busy'}")
    driver.prune()
    return report
