"""The state subsystem: STORE, FETCH, DELETE, KEYS, CAS on ``<state_dir>/state.db``."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from msgspec import UNSET, UnsetType

from ..errors import NotFound, PermissionDenied
from ..kernel.syscalls import Call, Handler
from ..permissions.policy import state_scope
from ..protocol import Op
from ..protocol.requests import CasRequest, DeleteRequest, FetchRequest, KeysRequest, StoreRequest
from ..units import parse_duration
from .database import MAX_ADDRESS_BYTES, Database, check_text
from .store import ABSENT, SCHEMA, KVStore, StateLimits

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..permissions import Permissions

#: The requests of the state syscalls (each names a ``scope`` and may name an ``agent``).
StateRequest = StoreRequest | FetchRequest | DeleteRequest | KeysRequest | CasRequest

log = logging.getLogger("agentos.state")

SHARED_NAMESPACE = "shared"


class StateService:
    """Per-agent and shared key/value state; every acknowledged write is on disk."""

    name = "state"

    def __init__(self, kernel: Kernel, permissions: Permissions) -> None:
        self.kernel = kernel
        #: Whose namespace a caller's ``own`` is, and who may use another agent's.
        self.permissions = permissions
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

    def _namespace(self, call: Call, request: StateRequest) -> str:
        """``shared``, the caller's own namespace, or (admin only) another agent's."""
        if state_scope(request) == "shared":
            return SHARED_NAMESPACE
        permissions = self.permissions
        own = permissions.principal(call.identity)
        target = None if request.agent is UNSET else request.agent
        if target is None or target == own:
            return f"own:{own}"
        check_text(target, "agent", MAX_ADDRESS_BYTES)
        if not permissions.is_admin(call.identity):
            raise PermissionDenied("only an admin may use another agent's state", agent=target)
        # An agent id names that agent's durable namespace, like its principal does.
        return f"own:{permissions.agent_principal(target)}"

    # Each handler reads its declared request, never a copy of it as a mapping: a value is
    # decoded once, by the dispatcher.

    async def store(self, call: Call) -> dict[str, Any]:
        """``{key, value, ttl?, scope?}`` -> the new version and expiry."""
        request = cast(StoreRequest, call.request)
        entry = await self.kv.store(self._namespace(call, request), request.key, request.value,
                                    _ttl(request.ttl))
        return {"key": entry.key, "version": entry.version, "expires_at": entry.expires_at}

    async def fetch(self, call: Call) -> dict[str, Any]:
        """``{key, scope?}`` -> the entry; NotFound if missing or expired."""
        request = cast(FetchRequest, call.request)
        entry = await self.kv.fetch(self._namespace(call, request), request.key)
        if entry is None:
            raise NotFound(f"no value for key {request.key!r}", key=request.key)
        return entry.to_dict()

    async def delete(self, call: Call) -> dict[str, Any]:
        """``{key, scope?}`` -> whether a live value was removed."""
        request = cast(DeleteRequest, call.request)
        return {"deleted": await self.kv.delete(self._namespace(call, request), request.key)}

    async def keys(self, call: Call) -> dict[str, Any]:
        """``{prefix?, limit?, scope?}`` -> sorted live keys."""
        request = cast(KeysRequest, call.request)
        keys = await self.kv.keys(self._namespace(call, request), "" if request.prefix is UNSET else request.prefix,
                                  1000 if request.limit is UNSET else request.limit)
        return {"keys": keys}

    async def cas(self, call: Call) -> dict[str, Any]:
        """``{key, expected?, value, ttl?, scope?}``: swap if the value equals ``expected``
        (no ``expected``: only if the key is absent). Returns whether it swapped and the value now."""
        request = cast(CasRequest, call.request)
        swapped, entry = await self.kv.cas(self._namespace(call, request), request.key,
                                           ABSENT if request.expected is UNSET else request.expected,
                                           request.value, _ttl(request.ttl))
        return {"swapped": swapped, "exists": entry is not None,
                "value": entry.value if entry else None,
                "version": entry.version if entry else None}


def _ttl(ttl: float | None | UnsetType) -> float | None:
    return None if ttl is UNSET else ttl
