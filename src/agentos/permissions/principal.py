"""How the permissions table names a caller in the spawn tree."""
from __future__ import annotations

from ..kernel.identity import Identity


def caller_id(identity: Identity) -> str:
    """The agent id for an agent the kernel spawned, else ``uid:<uid>`` for an outside client.

    This names the caller *now* (lineage links, KILL checks). Durable data (state,
    mailboxes) is keyed by ``Permissions.principal``, which survives restarts.
    """
    return identity.agent_id if identity.agent_id is not None else f"uid:{identity.uid}"


def project_segment(project: str) -> str:
    """The segment of a principal that holds a project: ``@team`` in ``uid:0/@team/worker``.
    No agent name starts with ``@``, so it never collides with an agent's own segment."""
    return f"@{project}"
