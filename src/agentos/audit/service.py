"""The audit subsystem: an observer logging every syscall, and the AUDIT syscall to read it."""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..kernel.syscalls import Call, Handler
from ..parking import ParkingExecutor
from ..protocol import Op, op_name
from .arguments import requested
from .log import AuditLog, Position, Record, matches
from .settings import AuditSettings

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..permissions import Permissions

#: Records a slow follower may fall behind by before it is told some were dropped.
FOLLOW_BACKLOG = 10_000
#: Most past records one AUDIT replays.
MAX_LIMIT = 1_000_000
#: Seconds between checks whether the log is due for rotation by age, or has files to age out.
MAINTAIN_EVERY = 60.0


class AuditService:
    """Appends one record per syscall to ``<state_dir>/audit.log`` (rotated: ``log``)."""

    name = "audit"

    def __init__(self, kernel: Kernel, permissions: Permissions) -> None:
        self.kernel = kernel
        #: Where a record's agent name comes from (the names agents were registered under).
        self.permissions = permissions
        try:
            settings = AuditSettings.from_section(kernel.config.section("audit"))
        except ValueError as exc:
            raise ValueError(f"kernel configuration: {exc}") from None
        self.log = AuditLog(kernel.config.state_dir / "audit.log", settings)
        self._maintenance: asyncio.TimerHandle | None = None
        # AUDIT reads queue on a thread of their own: a burst of them never holds the
        # loop's shared executor, which SPAWN's sandbox handshakes wait on.
        self._reader: ParkingExecutor | None = None

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.AUDIT: self.audit}

    async def start(self) -> None:
        self.log.loop = asyncio.get_running_loop()
        self.kernel.add_observer(self.observe)  # every syscall is recorded
        self._reader = ParkingExecutor(1, thread_name_prefix="agentos-audit-reader")
        # Off the loop: it reads the current file once to index it, and finishes a crash's rotation.
        await asyncio.get_running_loop().run_in_executor(self._reader, self.log.open)
        self._maintain()

    async def stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self._reader is not None:
            self._reader.shutdown(cancel_futures=True)
        self.log.close()

    def _maintain(self) -> None:
        self.log.maintain()
        self._maintenance = asyncio.get_running_loop().call_later(MAINTAIN_EVERY, self._maintain)

    async def _read(self, agent: str | None, limit: int, since: float | None, until: float | None,
                    end: Position) -> list[Record]:
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, functools.partial(self.log.read, agent, limit, since, until, end))

    def capabilities(self) -> Mapping[str, Any]:
        return {"path": str(self.log.path)}

    def observe(self, call: Call, outcome: str, latency_s: float) -> None:
        """Log one finished syscall: who, what (its key arguments, ``arguments.requested``; never
        content), how it ended, how long it took."""
        identity = call.identity
        agent = identity.agent_id
        # Microseconds by integer division: round(x, n) costs about 1 us a call (it goes
        # through a decimal string), twice per syscall.
        record: Record = {
            "ts": time.time_ns() // 1000 / 1e6,
            "agent": agent,
            "name": None if agent is None else self.permissions.name_of(agent),
            "uid": identity.uid,
            "pid": identity.pid,
            "op": op_name(call.op),
            "outcome": outcome,
            "latency_ms": int(latency_s * 1e6) / 1e3,
        }
        args = requested(call.op, call.request)
        if args is not None:
            record["args"] = args
        self.log.record(record)

    async def audit(self, call: Call) -> None:
        """Stream the last ``limit`` records (by ``agent`` if given); with ``follow``, keep
        streaming new ones until the client goes away."""
        args = call.args()
        agent = args.get("agent")
        if agent is not None and not isinstance(agent, str):
            raise InvalidArgument("agent must be an agent name, id or 'uid:<n>'", field="agent")
        limit = args.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be an integer from 0 to {MAX_LIMIT}, got {limit!r}",
                                  field="limit")
        follow = args.get("follow", False)
        if not isinstance(follow, bool):
            raise InvalidArgument(f"follow must be true or false, got {follow!r}", field="follow")
        since, until = _time(args, "since"), _time(args, "until")
        if since is not None and until is not None and until < since:
            raise InvalidArgument(f"until ({until}) is before since ({since})", field="until")
        # A stream even when nothing matches: the request ends with END, never a plain reply.
        call.open_stream()
        if not follow:
            end = self.log.flush()
            for record in await self._read(agent, limit, since, until, end):
                await call.stream(record)
            return
        queue: asyncio.Queue[Record] = asyncio.Queue(FOLLOW_BACKLOG)
        dropped = 0

        def deliver(record: Record) -> None:
            nonlocal dropped
            if not matches(record, agent) or (until is not None and record["ts"] >= until):
                return
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                dropped += 1

        end, stop = self.log.follow(deliver)
        try:
            # Confirms that every later record will reach this stream (the SDK waits for it).
            await call.stream({"following": True})
            for record in await self._read(agent, limit, since, until, end):
                await call.stream(record)
            while True:
                record = await queue.get()
                if dropped:
                    await call.stream({"dropped": dropped})
                    dropped = 0
                await call.stream(record)
        finally:
            stop()


def _time(args: Mapping[str, Any], key: str) -> float | None:
    """``since``/``until``: Unix seconds (the request struct has checked the type)."""
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidArgument(f"{key} must be a time in Unix seconds, got {value!r}", field=key)
    return float(value)
