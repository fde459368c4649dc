"""The permissions subsystem: the syscall guard, GET_PERMS and SET_PERMS."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotFound, PermissionDenied
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from .capabilities import Capability, names
from .policy import STATE_OPS, required_capability, state_scope
from .registry import Permissions

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel


class PermissionService:
    """Checks every syscall against the caller's capabilities before its handler runs."""

    name = "permissions"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.permissions = Permissions.from_section(kernel.config.section("permissions"))

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.GET_PERMS: self.get_perms, Op.SET_PERMS: self.set_perms}

    async def start(self) -> None:
        # Every opcode: a syscall nobody listed is refused (deny by default).
        self.kernel.add_guard(self.guard)

    async def stop(self) -> None:
        pass

    def capabilities(self) -> Mapping[str, Any]:
        return {"capabilities": names(Capability)}

    def registry_sizes(self) -> Mapping[str, int]:
        return self.permissions.sizes()

    def guard(self, call: Call) -> None:
        """Refuse ``call`` unless its caller holds the capability its opcode needs."""
        needed = required_capability(call.op, state_scope(call.request) if call.op in STATE_OPS else "own")
        if needed is None:
            # Still refuses outside uids that are not admitted at all.
            self.permissions.capabilities_of(call.identity)
            return
        self.permissions.require(call.identity, needed)

    async def get_perms(self, call: Call) -> dict[str, Any]:
        """Your own capabilities; an admin may name another agent with ``agent``."""
        target = call.args().get("agent")
        if target is None or target == call.identity.agent_id:
            return self.permissions.describe(call.identity)
        if not self.permissions.is_admin(call.identity):
            raise PermissionDenied("only an admin may read another agent's permissions")
        if not isinstance(target, str) or not self.permissions.knows(target):
            raise NotFound(f"no agent {target!r} is registered", agent=target)
        return self.permissions.describe_agent(target)

    async def set_perms(self, call: Call) -> dict[str, Any]:
        """Admin only (the guard checked): replace an agent's or a uid's capabilities."""
        args = call.args()
        caps = args.get("capabilities")
        if caps is None:
            raise InvalidArgument("SET_PERMS needs 'capabilities' (a list of names)")
        if "agent" in args and "uid" in args:
            raise InvalidArgument("SET_PERMS takes 'agent' or 'uid', not both", field="uid")
        if "agent" in args:
            record = self.permissions.set_agent(str(args["agent"]), caps)
            return {"agent": record.agent_id, "capabilities": names(record.capabilities)}
        if "uid" in args:
            uid = args["uid"]
            if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
                raise InvalidArgument(f"uid must be a non-negative integer, got {uid!r}")
            return {"uid": uid, "capabilities": names(self.permissions.set_uid(uid, caps))}
        raise InvalidArgument("SET_PERMS needs 'agent' (an agent id) or 'uid'")
