"""Who holds which capabilities: spawned agents (with their lineage) and outside uids."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotFound, PermissionDenied
from ..kernel.identity import Identity
from .capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CHILD_CAPABILITIES,
    Capability,
    names,
    parse_capabilities,
)
from .principal import caller_id, project_segment


@dataclass
class AgentRecord:
    """What the kernel knows about a spawned agent's rights."""

    agent_id: str
    name: str | None
    capabilities: frozenset[Capability]
    #: Who spawned it: an agent id or ``uid:<n>`` (see ``caller_id``).
    parent: str | None
    #: Its durable principal: the spawner's principal, ``/``, its name (``uid:0/team/worker``).
    #: A restarted agent, or the same tree started again after a kernel restart, gets the
    #: same path and so the same state and mailbox; another spawner's same-named child does not.
    #: An outside client's agent of a project has the project in its path (``uid:0/@team/worker``),
    #: so two teams' agents of one name never share mail, state or registered names.
    path: str
    #: The project it belongs to (None: none).
    project: str | None = None


class Permissions:
    """The capability table the guard, SPAWN and KILL consult.

    Outside clients are identified by uid (SO_PEERCRED): root, the kernel's own
    uid and ``admin_uids`` are admins; uids in ``uid_capabilities`` get those
    capabilities; any other uid is refused. Agents get what their spawner
    granted, never more than the spawner holds.
    """

    def __init__(self, admin_uids: Iterable[int] = (),
                 uid_capabilities: Mapping[int, frozenset[Capability]] | None = None,
                 default_child: frozenset[Capability] = DEFAULT_CHILD_CAPABILITIES) -> None:
        self.admin_uids = frozenset({0, os.geteuid(), *admin_uids})
        self._uids: dict[int, frozenset[Capability]] = dict(uid_capabilities or {})
        self.default_child = default_child
        self._agents: dict[str, AgentRecord] = {}
        #: Name -> ids, principal path -> ids, each oldest first: what SEND, REGISTER and
        #: name lookups ask, answered without walking every agent.
        self._named: dict[str, dict[str, None]] = {}
        self._paths: dict[str, dict[str, None]] = {}

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Permissions:
        """Build from the ``permissions`` config section:
        ``{"admin_uids": [1000], "uids": {"1001": ["think", "message"]}, "default_child": [...]}``."""
        admin_uids = [_uid(u) for u in section.get("admin_uids", [])]
        uids = {_uid(u): parse_capabilities(caps, f"permissions.uids[{u}]")
                for u, caps in dict(section.get("uids") or {}).items()}
        default = parse_capabilities(section["default_child"], "permissions.default_child") \
            if "default_child" in section else DEFAULT_CHILD_CAPABILITIES
        return cls(admin_uids, uids, default)

    # -- lookups ------------------------------------------------------------------

    def capabilities_of(self, identity: Identity) -> frozenset[Capability]:
        """Everything ``identity`` may do; PermissionDenied for an outside uid not admitted."""
        if identity.agent_id is not None:
            record = self._agents.get(identity.agent_id)
            caps = record.capabilities if record else frozenset()
        elif identity.admin or identity.uid in self.admin_uids:
            caps = ALL_CAPABILITIES
        elif identity.uid in self._uids:
            caps = self._uids[identity.uid]
        else:
            raise PermissionDenied(f"uid {identity.uid} may not use this kernel (not root, not the "
                                   "kernel's uid, not listed in the permissions section)",
                                   uid=identity.uid)
        return ALL_CAPABILITIES if Capability.ADMIN in caps else caps

    def is_admin(self, identity: Identity) -> bool:
        return Capability.ADMIN in self.capabilities_of(identity)

    def holds(self, identity: Identity, capability: Capability) -> bool:
        return capability in self.capabilities_of(identity)

    def require(self, identity: Identity, capability: Capability) -> None:
        """Raise PermissionDenied unless ``identity`` holds ``capability``."""
        if capability not in self.capabilities_of(identity):
            raise PermissionDenied(f"{self.describe_caller(identity)} lacks the "
                                   f"{capability.value!r} capability",
                                   capability=capability.value)

    def describe_caller(self, identity: Identity) -> str:
        if identity.agent_id is None:
            return f"uid {identity.uid}"
        name = self.name_of(identity.agent_id)
        return f"agent {name or identity.agent_id}"

    def name_of(self, agent_id: str) -> str | None:
        record = self._agents.get(agent_id)
        return record.name if record else None

    def id_of(self, name: str) -> str | None:
        """The id of the live agent called ``name`` (the newest, if several share it)."""
        ids = self.ids_named(name)
        return ids[-1] if ids else None

    def ids_named(self, name: str) -> list[str]:
        """Ids of the registered agents called ``name``, oldest first."""
        return list(self._named.get(name, ()))

    def knows(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is registered (and not forgotten)."""
        return agent_id in self._agents

    def agents(self) -> list[str]:
        """Ids of every agent registered (and not forgotten)."""
        return list(self._agents)

    def sizes(self) -> dict[str, int]:
        """Entries per index (each bounded by the agents the process table keeps)."""
        return {"agents": len(self._agents), "names": len(self._named), "paths": len(self._paths)}

    def principal(self, identity: Identity) -> str:
        """The durable name of ``identity``'s own state and mailbox: an agent's spawn path,
        or ``uid:<n>`` for an outside client."""
        if identity.agent_id is None:
            return f"uid:{identity.uid}"
        return self.agent_principal(identity.agent_id)

    def agent_principal(self, agent_id: str) -> str:
        record = self._agents.get(agent_id)
        return record.path if record is not None else agent_id

    def find_path(self, path: str) -> str | None:
        """The id of the newest agent whose principal is ``path``."""
        ids = self._paths.get(path)
        return next(reversed(ids)) if ids else None

    def describe(self, identity: Identity) -> dict[str, Any]:
        """GET_PERMS' answer for ``identity``."""
        if identity.agent_id is not None:
            return self.describe_agent(identity.agent_id)
        caps = self.capabilities_of(identity)
        return {"principal": self.principal(identity), "agent": None, "name": None,
                "uid": identity.uid, "parent": None, "admin": Capability.ADMIN in caps,
                "capabilities": names(caps)}

    def describe_agent(self, agent_id: str) -> dict[str, Any]:
        """GET_PERMS' answer for a spawned agent (an unregistered one holds nothing)."""
        record = self._agents.get(agent_id)
        caps = record.capabilities if record else frozenset()
        caps = ALL_CAPABILITIES if Capability.ADMIN in caps else caps
        return {"principal": self.agent_principal(agent_id), "agent": agent_id,
                "name": record.name if record else None, "uid": None,
                "parent": record.parent if record else None,
                "admin": Capability.ADMIN in caps, "capabilities": names(caps)}

    # -- spawn and kill --------------------------------------------------------------

    def child_capabilities(self, parent: Identity, requested: Iterable[str] | None) -> frozenset[Capability]:
        """The capabilities a child spawned by ``parent`` gets.

        ``requested=None`` means the defaults, trimmed to what the parent holds;
        an explicit request for anything the parent lacks is PermissionDenied.
        """
        held = self.capabilities_of(parent)
        if requested is None:
            return frozenset(self.default_child & held)
        wanted = parse_capabilities(requested, "spawn capabilities")
        excess = wanted - held
        if excess:
            raise PermissionDenied(f"{self.describe_caller(parent)} cannot give a child "
                                   f"{', '.join(names(excess))}: it does not hold "
                                   f"{'them' if len(excess) > 1 else 'it'}",
                                   field="capabilities", capabilities=names(excess))
        return wanted

    def register_agent(self, agent_id: str, capabilities: Iterable[Capability],
                       parent: Identity | None, name: str | None = None,
                       project: str | None = None) -> AgentRecord:
        """Record a spawned agent (call after ``child_capabilities`` approved its set)."""
        spawner = self.principal(parent) if parent is not None else "kernel"
        if project is not None and (parent is None or parent.agent_id is None):
            # An agent's children inherit the project, and with it this segment of their path.
            spawner = f"{spawner}/{project_segment(project)}"
        record = AgentRecord(agent_id, name, frozenset(capabilities),
                             caller_id(parent) if parent is not None else None,
                             f"{spawner}/{name or agent_id}", project)
        self._unindex(agent_id)
        self._agents[agent_id] = record
        if name is not None:
            self._named.setdefault(name, {})[agent_id] = None
        self._paths.setdefault(record.path, {})[agent_id] = None
        return record

    def project_of(self, agent_id: str) -> str | None:
        record = self._agents.get(agent_id)
        return record.project if record is not None else None

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent that will not come back. Its children keep their own records."""
        self._unindex(agent_id)
        self._agents.pop(agent_id, None)

    def _unindex(self, agent_id: str) -> None:
        record = self._agents.get(agent_id)
        if record is None:
            return
        for index, key in ((self._named, record.name), (self._paths, record.path)):
            ids = index.get(key) if key is not None else None
            if key is not None and ids is not None:
                ids.pop(agent_id, None)
                if not ids:
                    del index[key]

    def is_descendant(self, agent_id: str, ancestor: str) -> bool:
        """True if ``ancestor`` (a ``caller_id``) spawned ``agent_id`` or one of its ancestors."""
        seen: set[str] = set()
        current = self._agents.get(agent_id)
        while current is not None and current.parent is not None and current.agent_id not in seen:
            if current.parent == ancestor:
                return True
            seen.add(current.agent_id)
            current = self._agents.get(current.parent)
        return False

    def may_observe(self, identity: Identity, agent_id: str) -> bool:
        """Whether ``identity`` may see the agent ``agent_id`` (in LIST, WAIT, LOGS and its
        ``agent.*`` events): itself and its descendants, any agent with ``observe``."""
        if agent_id == identity.agent_id or self.holds(identity, Capability.OBSERVE):
            return True
        return self.is_descendant(agent_id, caller_id(identity))

    def check_kill(self, identity: Identity, target_agent_id: str, action: str = "kill") -> None:
        """Raise PermissionDenied unless ``identity`` may kill (or ``action``: pause, resume)
        ``target_agent_id``: admins may do it to anything, others only to their own descendants."""
        caps = self.capabilities_of(identity)
        if Capability.ADMIN in caps:
            return
        if Capability.KILL not in caps:
            raise PermissionDenied(f"{self.describe_caller(identity)} lacks the 'kill' capability",
                                   capability="kill")
        if not self.is_descendant(target_agent_id, caller_id(identity)):
            raise PermissionDenied(f"{self.describe_caller(identity)} may {action} only agents it "
                                   f"spawned (or their descendants), not {target_agent_id}",
                                   target=target_agent_id)

    # -- SET_PERMS -----------------------------------------------------------------

    def set_agent(self, agent_id: str, capabilities: Iterable[str]) -> AgentRecord:
        """Replace a registered agent's capabilities (the caller must be admin)."""
        record = self._agents.get(agent_id)
        if record is None:
            raise NotFound(f"no agent {agent_id!r} is registered", agent=agent_id)
        record.capabilities = parse_capabilities(capabilities)
        return record

    def set_uid(self, uid: int, capabilities: Iterable[str]) -> frozenset[Capability]:
        """Admit outside clients of ``uid`` with ``capabilities`` (the caller must be admin)."""
        if uid in self.admin_uids:
            raise InvalidArgument(f"uid {uid} is an admin uid; its rights cannot be narrowed")
        caps = parse_capabilities(capabilities)
        self._uids[uid] = caps
        return caps


def _uid(value: Any) -> int:
    try:
        uid = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"permissions: {value!r} is not a uid") from None
    if uid < 0:
        raise ValueError(f"permissions: {value!r} is not a uid")
    return uid
