"""The stable name of a caller, used to key its state namespace and default mailbox."""
from __future__ import annotations

from ..kernel.identity import Identity


def principal(identity: Identity) -> str:
    """The agent id for an agent the kernel spawned, else ``uid:<uid>`` for an outside client."""
    return identity.agent_id if identity.agent_id is not None else f"uid:{identity.uid}"
