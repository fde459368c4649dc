"""Cgroups made ahead for the zygote's embryos, each embryo already moved into its own.

The zygote keeps an embryo (a child forked ahead into fresh namespaces, waiting for its
plan: docs/sandbox.md). Making an agent's cgroup (a dozen mkdirs and limits on cgroup v1)
and moving its child in (a v1 move waits for an RCU grace period, several ms on a loaded
host) were the launch's own work, in its thread while the child set up. Here both are done
for the embryo before the SPAWN comes: a ``spare`` cgroup with no limits is made at the top
of the kernel's tree and the embryo moved into it, in a thread of its own, after the launch
that used the previous embryo. When an agent's launch gets that embryo, its cgroup is the
spare renamed (``CgroupDriver.adopt``: the agent's limits written first, before its child
runs anything of the agent's), and no move is needed. Only a top-level agent can be given
one (a rename stays in its parent), only where the driver renames (cgroup v1); any other
launch, or a spare that is not ready or cannot be adopted, makes and moves as before.

One spare per unused embryo: each was made for one process, which becomes one agent or
dies unused; none is ever used twice. Spares of embryos the zygote no longer has (a zygote
replaced) are removed at the next refill, and every one when the kernel stops.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable

from ..cgroups import AgentCgroup, CgroupDriver, Limits, destroy
from ..parking import ParkingExecutor
from ..sandbox import Launcher

__all__ = ["Spares"]

log = logging.getLogger("agentos.processes")

class _Spare:
    __slots__ = ("cgroup", "ready")

    def __init__(self) -> None:
        #: The spare, once made with its embryo inside (None: not made).
        self.cgroup: AgentCgroup | None = None
        self.ready = threading.Event()


class Spares:
    """The spare cgroups of a launcher's embryos (``refill`` after a launch, ``adopt`` in one)."""

    def __init__(self, driver: Callable[[], CgroupDriver], launcher: Launcher) -> None:
        #: The kernel's cgroup driver (it may fall back to none as the kernel starts).
        self._driver = driver
        self.launcher = launcher
        #: Embryo pid -> its spare (being made, or made).
        self._spares: dict[int, _Spare] = {}
        #: Spares whose embryo was given another cgroup: removed once it has left them.
        self._left: dict[int, AgentCgroup] = {}
        self._lock = threading.Lock()
        self._pending = False
        self._closed = False
        self._thread = ParkingExecutor(1, thread_name_prefix="agentos-spare-cgroups")

    @property
    def driver(self) -> CgroupDriver:
        return self._driver()

    @property
    def enabled(self) -> bool:
        return self.driver.adopts

    def refill(self) -> None:
        """Give each new embryo a spare, off the caller's path (after a launch that used one)."""
        with self._lock:
            if not self.enabled or self._pending or self._closed:
                return
            self._pending = True
        self._thread.submit(self._refill)

    def _refill(self) -> None:
        with self._lock:
            self._pending = False
        new: list[tuple[int, _Spare]] = []
        self.launcher.with_embryos(lambda pids: new.extend(self._expect(pids)))
        for pid, spare in new:
            try:
                spare.cgroup = self._make(pid)
            except OSError as exc:
                log.debug("no spare cgroup for embryo %d: %s", pid, exc)
            finally:
                spare.ready.set()

    def _expect(self, pids: list[int]) -> list[tuple[int, _Spare]]:
        """Record the embryos (no launch can take one meanwhile); remove the spares of those gone
        and those left by embryos whose launch failed before they left them."""
        with self._lock:
            for pid in [pid for pid in self._spares if pid not in pids]:
                gone = self._spares[pid].cgroup
                # Not empty: its embryo became an agent whose launch is about to adopt it.
                if gone is None or gone.remove():
                    del self._spares[pid]
            for pid, left in list(self._left.items()):
                if left.remove():
                    del self._left[pid]
            new = [(pid, _Spare()) for pid in pids if pid not in self._spares]
            self._spares.update(new)
        return new

    def _make(self, pid: int) -> AgentCgroup:
        cgroup = self.driver.prepare(f"spare-{secrets.token_hex(6)}", Limits())
        self.driver.make(cgroup)
        try:
            cgroup.attach(pid)
        except BaseException:
            cgroup.remove()
            raise
        return cgroup

    def adopt(self, pid: int, cgroup: AgentCgroup) -> bool:
        """Make ``pid``'s spare the agent's ``cgroup`` (its limits written, renamed); False when
        it has none to give: then the caller makes ``cgroup``, moves ``pid`` in and calls
        ``release(pid)``."""
        with self._lock:
            spare = self._spares.pop(pid, None)
        if spare is None:
            return False
        spare.ready.wait()  # being made (a grace period or two): it must not move the agent after
        made = spare.cgroup
        if made is None:
            return False
        if cgroup.parent is None:
            try:
                self.driver.adopt(made, cgroup)
                return True
            except OSError as exc:
                log.debug("spare cgroup %s not adopted: %s", made.agent_id, exc)
        with self._lock:
            self._left[pid] = made
        return False

    def release(self, pid: int) -> None:
        """``pid`` was moved out of its spare (it was not adopted): remove the spare."""
        with self._lock:
            left = self._left.get(pid)
            if left is not None and left.remove():
                del self._left[pid]

    async def close(self) -> None:
        """Remove every spare, killing the embryos in them (before the launcher's close, which
        reaps them): no launch runs any more."""
        with self._lock:
            self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
        with self._lock:
            spares = [s.cgroup for s in self._spares.values() if s.cgroup is not None]
            spares.extend(self._left.values())
            self._spares.clear()
            self._left.clear()
        for cgroup in spares:
            await destroy(cgroup)
