"""The ``cluster`` section of the kernel's configuration (``kernel.cluster`` in a manifest,
``agentos kernel --cluster``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..units import parse_duration

#: Seconds a placed agent may wait for a node before SPAWN fails ``unavailable``.
DEFAULT_PLACEMENT_TIMEOUT = 60.0
#: How placed agents are hosted: ``node``, one ``NodeHost`` actor per node for all of them (the
#: density mode), or ``agent``, an ``AgentHost`` actor of its own each (docs/cluster.md says why
#: ``node`` is the default).
HOSTS = ("node", "agent")


@dataclass(frozen=True)
class ClusterSettings:
    """``address``: Ray's (``HOST:PORT`` of its GCS, ``ray://HOST:PORT`` for Ray Client, or
    ``auto``: the cluster this machine's ``ray start`` joined); ``placement_timeout``; ``hosts``
    (one of ``HOSTS``)."""

    address: str
    placement_timeout: float = DEFAULT_PLACEMENT_TIMEOUT
    hosts: str = HOSTS[0]

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ClusterSettings:
        unknown = sorted(set(section) - {"address", "placement_timeout", "hosts"})
        if unknown:
            raise ValueError(f"cluster: unknown setting {', '.join(map(repr, unknown))} "
                             "(expected address, placement_timeout, hosts)")
        address = section.get("address")
        if not isinstance(address, str) or not address.strip():
            raise ValueError(f"cluster.address: expected ray://HOST:PORT, HOST:PORT or auto, got {address!r}")
        timeout = section.get("placement_timeout", DEFAULT_PLACEMENT_TIMEOUT)
        if not isinstance(timeout, (int, float, str)):
            raise ValueError(f"cluster.placement_timeout: expected a duration such as 60s, got {timeout!r}")
        seconds = parse_duration(timeout, "cluster.placement_timeout")
        hosts = section.get("hosts", HOSTS[0])
        if hosts not in HOSTS:
            raise ValueError(f"cluster.hosts: expected {' or '.join(HOSTS)}, got {hosts!r}")
        return cls(address=address.strip(), placement_timeout=seconds, hosts=hosts)


@dataclass(frozen=True)
class LaunchSettings:
    """What the kernel decides for every agent, handed to its node with each launch."""

    passed_env: tuple[str, ...]
    #: Host paths no agent may see (the kernel's socket and state; the node adds Ray's own).
    masked_paths: list[str]
    agent_uid: int
