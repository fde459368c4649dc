"""Which capability each syscall needs: the table the guard applies."""
from __future__ import annotations

from typing import Any

from msgspec import UNSET

from ..errors import InvalidArgument
from ..protocol import Op
from .capabilities import Capability

#: Syscalls anyone admitted may make: introspection of oneself and the kernel.
OPEN: frozenset[Op] = frozenset({Op.NOOP, Op.HELLO, Op.GET_PERMS, Op.READY, Op.LIST, Op.WAIT,
                                 Op.LOGS,
                                 # Settling needs no capability but who one is: the waiting agent's
                                 # owner (an outside client) or an admin; the mcp service checks it.
                                 Op.APPROVALS})

REQUIRED: dict[Op, Capability] = {
    Op.THINK: Capability.THINK,
    Op.CONTEXT: Capability.THINK,
    Op.USAGE: Capability.THINK,
    # The model API without a key: the same gate as THINK, so `think` is all an agent needs.
    Op.COUNT: Capability.THINK,
    Op.EMBED: Capability.THINK,
    Op.MODELS: Capability.THINK,
    Op.SPAWN: Capability.SPAWN,
    # Starts a process again: the target must also be the caller's descendant (processes checks).
    Op.START: Capability.SPAWN,
    # A process in a running agent, confined as it is: what SPAWN of that agent could start.
    # The target must also be the caller or its descendant: the process service checks that.
    Op.EXEC: Capability.SPAWN,
    Op.EXEC_INPUT: Capability.SPAWN,
    Op.EXEC_SIGNAL: Capability.SPAWN,
    Op.EXEC_RESIZE: Capability.SPAWN,
    # A forwarded port reaches what an exec running a client inside the agent already reaches;
    # the target rule is EXEC's (the process service checks it).
    Op.EXPOSE: Capability.SPAWN,
    Op.UNEXPOSE: Capability.SPAWN,
    # Files of a running agent, read and written by a worker confined as it is: what an exec
    # into it could do. The same target rule as EXEC (the process service checks it).
    **{op: Capability.SPAWN for op in (Op.FILE_READ, Op.FILE_WRITE, Op.FILE_LIST, Op.FILE_STAT,
                                       Op.FILE_MKDIR, Op.FILE_REMOVE, Op.FILE_RENAME, Op.FILE_UPLOAD,
                                       Op.FILE_DOWNLOAD, Op.FILE_WATCH, Op.FILE_DATA)},
    # KILL also needs the target to be a descendant: the process service checks that.
    Op.KILL: Capability.KILL,
    # Freezing an agent stops it as surely as killing it: the same capability, the same target rule.
    Op.PAUSE: Capability.KILL,
    Op.RESUME: Capability.KILL,
    # Wiping a project's mail, state and names destroys more than a KILL: only admins and the
    # uid whose project it is (the processes service checks the owner).
    Op.PURGE: Capability.KILL,
    # Removing a volume wipes its data as PURGE does; the processes service checks the owner.
    Op.VOLUMES: Capability.KILL,
    Op.SEND: Capability.MESSAGE,
    Op.RECV: Capability.MESSAGE,
    Op.BROADCAST: Capability.MESSAGE,
    Op.REGISTER: Capability.MESSAGE,
    Op.ACK: Capability.MESSAGE,
    Op.DEAD_LETTERS: Capability.MESSAGE,
    Op.SUBSCRIBE: Capability.MESSAGE,
    Op.UNSUBSCRIBE: Capability.MESSAGE,
    Op.PUBLISH: Capability.MESSAGE,
    Op.SET_PERMS: Capability.ADMIN,
    Op.HTTP: Capability.HTTP,
    Op.AUDIT: Capability.ADMIN,
}

STATE_OPS: frozenset[Op] = frozenset({Op.STORE, Op.FETCH, Op.DELETE, Op.KEYS, Op.CAS})

#: State scope name -> the capability it needs.
SCOPES: dict[str, Capability] = {"own": Capability.STATE_OWN, "shared": Capability.STATE_SHARED}


def state_scope(request: Any) -> str:
    """The scope a decoded state request names (its declared type allows only the two):
    ``own`` unless it says ``shared``."""
    scope = getattr(request, "scope", UNSET)
    return "own" if scope is UNSET else str(scope)


def required_capability(op: int, scope: str = "own") -> Capability | None:
    """What ``op`` needs; None if nothing. Unknown opcodes need ``admin`` (deny by default).

    ``scope`` (``state_scope``) is consulted only for state syscalls, whose scope decides the capability.
    """
    if op in STATE_OPS:
        if scope not in SCOPES:
            raise InvalidArgument(f"scope must be 'own' or 'shared', got {scope!r}", field="scope")
        return SCOPES[scope]
    if op in REQUIRED:
        return REQUIRED[Op(op)]
    if op in OPEN:
        return None
    return Capability.ADMIN
