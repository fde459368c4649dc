"""Connection caps: how many connections one agent, or one outside uid, may hold at once.

Without them one client could take every fd the kernel has, and every other
client would then be refused. An agent's connections are counted against the
agent, however it connected; an outside client's against its SO_PEERCRED uid.
"""
from __future__ import annotations

from typing import TypeVar

from ..errors import Busy
from .config import ConnectionLimits
from .identity import Identity

K = TypeVar("K")


class Admission:
    """Live connections per agent and per uid, checked against ``ConnectionLimits``."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._per_agent: dict[str, int] = {}
        self._per_uid: dict[int, int] = {}

    def admit(self, identity: Identity) -> Busy | None:
        """Count one more connection of ``identity``; returns the refusal if that is over its cap.

        A refused connection stays counted until its ``release``, which follows as soon as
        the kernel has sent the refusal and closed it.
        """
        if identity.agent_id is not None:
            count = self._per_agent[identity.agent_id] = self._per_agent.get(identity.agent_id, 0) + 1
            limit, cap, who = self.limits.per_agent, "per_agent", f"agent {identity.agent_id}"
        else:
            count = self._per_uid[identity.uid] = self._per_uid.get(identity.uid, 0) + 1
            limit, cap, who = self.limits.per_uid, "per_uid", f"uid {identity.uid}"
        if count <= limit:
            return None
        return Busy(f"{who} already has {limit} connections to the kernel, its cap "
                    f"(connections.{cap}); close one first", cap=f"connections.{cap}", limit=limit)

    def release(self, identity: Identity) -> None:
        """Forget one connection of ``identity`` (it closed)."""
        if identity.agent_id is not None:
            _decrement(self._per_agent, identity.agent_id)
        else:
            _decrement(self._per_uid, identity.uid)


def _decrement(counts: dict[K, int], key: K) -> None:
    # Keys go once their count is zero, so the dicts hold live clients only.
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
