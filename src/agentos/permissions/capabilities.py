"""The capability names an agent can hold, and parsing them from requests and config."""
from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgument


class Capability(str, enum.Enum):
    """What a caller may do. ``admin`` implies every other capability."""

    THINK = "think"
    SPAWN = "spawn"
    KILL = "kill"
    MESSAGE = "message"
    STATE_OWN = "state_own"
    STATE_SHARED = "state_shared"
    HTTP = "http"
    #: LIST, WAIT and LOGS of agents that are not one's own descendants.
    OBSERVE = "observe"
    ADMIN = "admin"


ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability)

#: What a child gets when its spawn request names no capabilities (never more than its parent).
DEFAULT_CHILD_CAPABILITIES: frozenset[Capability] = frozenset(
    {Capability.THINK, Capability.MESSAGE, Capability.STATE_OWN})

#: ``state`` in a request or manifest means both state scopes.
_ALIASES = {"state": (Capability.STATE_OWN, Capability.STATE_SHARED)}


def parse_capabilities(value: Any, what: str = "capabilities") -> frozenset[Capability]:
    """A list of capability names -> a set; unknown names are an InvalidArgument."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{what} must be a list of names such as ['think', 'message'], "
                              f"got {value!r}")
    caps: set[Capability] = set()
    for name in value:
        if name in _ALIASES:
            caps.update(_ALIASES[name])
            continue
        try:
            caps.add(Capability(name))
        except ValueError:
            known = ", ".join(sorted(c.value for c in Capability))
            raise InvalidArgument(f"unknown capability {name!r} in {what} (known: {known}, state)",
                                  capability=name) from None
    return frozenset(caps)


def names(caps: Iterable[Capability]) -> list[str]:
    """Sorted names, for replies and logs."""
    return sorted(c.value for c in caps)
