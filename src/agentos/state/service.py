"""The state subsystem: STORE, FETCH, DELETE, KEYS, CAS on ``<state_dir>/state.db``."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotFound, PermissionDenied
from ..kernel.syscalls import Call, Handler
from ..permissions.policy import state_scope
from ..permissions.service import permissions_of
from ..protocol import Op
from ..units import parse_duration
from .database import MAX_ADDRESS_BYTES, Database, check_text
from .store import ABSENT, SCHEMA, KVStore, StateLimits

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

log = logging.getLogger("agentos.state")

SHARED_NAMESPACE = "shared"


class StateService:
    """Per-agent and shared key/value state; every acknowledged write is on disk."""

    name = "state"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        section = kernel.config.section("state")
        self.db = Database(kernel.config.state_dir / "state.db", SCHEMA)
        self.kv = KVStore(self.db, StateLimits.from_section(section))
        self.sweep_interval = parse_duration(section.get("sweep_interval", 60), "state.sweep_interval")
        self._sweeper: asyncio.Task[None] | None = None

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.STORE: self.store, Op.FETCH: self.fetch, Op.DELETE: self.delete,
                Op.KEYS: self.keys, Op.CAS: self.cas}

    async def start(self) -> None:
        await asyncio.to_thread(self.db.open)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.to_thread(self.db.close)

    def capabilities(self) -> Mapping[str, Any]:
        limits = self.kv.limits
        return {"scopes": ["own", "shared"], "max_value_bytes": limits.max_value_bytes,
                "max_agent_bytes": limits.max_namespace_bytes}

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                purged = await self.kv.purge_expired()
            except Exception:
                log.exception("sweeping expired state failed")
            else:
                if purged:
                    log.debug("swept %d expired state entries", purged)

    async def purge(self, root: str) -> dict[str, int]:
        """Remove the own stores of every principal at or beneath the glob ``root`` (a project's
        part, for PURGE). The shared store belongs to no project and stays."""
        return {"keys": await self.kv.purge((f"own:{root}", f"own:{root}/*"))}

    def _namespace(self, call: Call, args: dict[str, Any]) -> str:
        """``shared``, the caller's own namespace, or (admin only) another agent's."""
        if state_scope(args) == "shared":
            return SHARED_NAMESPACE
        permissions = permissions_of(self.kernel)
        own = permissions.principal(call.identity)
        target = args.get("agent")
        if target is None or target == own:
            return f"own:{own}"
        check_text(target, "agent", MAX_ADDRESS_BYTES)
        if not permissions.is_admin(call.identity):
            raise PermissionDenied("only an admin may use another agent's state", agent=target)
        # An agent id names that agent's durable namespace, like its principal does.
        return f"own:{permissions.agent_principal(target)}"

    async def store(self, call: Call) -> dict[str, Any]:
        """``{key, value, ttl?, scope?}`` -> the new version and expiry."""
        args = call.args()
        if "value" not in args:
            raise InvalidArgument("STORE needs a 'value'", field="value")
        entry = await self.kv.store(self._namespace(call, args), _key(args),
                                       args["value"], args.get("ttl"))
        return {"key": entry.key, "version": entry.version, "expires_at": entry.expires_at}

    async def fetch(self, call: Call) -> dict[str, Any]:
        """``{key, scope?}`` -> the entry; NotFound if missing or expired."""
        args = call.args()
        key = _key(args)
        entry = await self.kv.fetch(self._namespace(call, args), key)
        if entry is None:
            raise NotFound(f"no value for key {key!r}", key=key)
        return entry.to_dict()

    async def delete(self, call: Call) -> dict[str, Any]:
        """``{key, scope?}`` -> whether a live value was removed."""
        args = call.args()
        return {"deleted": await self.kv.delete(self._namespace(call, args), _key(args))}

    async def keys(self, call: Call) -> dict[str, Any]:
        """``{prefix?, limit?, scope?}`` -> sorted live keys."""
        args = call.args()
        keys = await self.kv.keys(self._namespace(call, args), args.get("prefix", ""),
                                     args.get("limit", 1000))
        return {"keys": keys}

    async def cas(self, call: Call) -> dict[str, Any]:
        """``{key, expected?, value, ttl?, scope?}``: swap if the value equals ``expected``
        (no ``expected``: only if the key is absent). Returns whether it swapped and the value now."""
        args = call.args()
        if "value" not in args:
            raise InvalidArgument("CAS needs a 'value'", field="value")
        swapped, entry = await self.kv.cas(self._namespace(call, args), _key(args),
                                              args.get("expected", ABSENT), args["value"],
                                              args.get("ttl"))
        return {"swapped": swapped, "exists": entry is not None,
                "value": entry.value if entry else None,
                "version": entry.version if entry else None}


def _key(args: dict[str, Any]) -> str:
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"key must be a non-empty string, got {key!r}", field="key")
    return key
