"""Agents on a Ray cluster (``agentos kernel --cluster``, the ``agentos[ray]`` extra; docs/cluster.md).

The kernel is Ray's driver and keeps everything central (keys, budgets, permissions, audit,
state, mail); each placed agent runs on a node under its node's ``NodeHost`` actor, or an
``AgentHost`` of its own (``host.py``), with that node's sandbox and cgroups, and speaks the
unchanged protocol to it. ``backend.py`` (and
``survey.py``, for ``agentos doctor --cluster``) import Ray; importing this package does not.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from .backend import ClusterService

#: The Ray namespace the host actors live in (an ``AgentHost`` is named by its agent's id).
NAMESPACE = "agentos"

#: What ``pip`` installs for the backend; the kernel says so when Ray is missing.
EXTRA = "agentos[ray]"


def cluster_service(kernel: Kernel) -> ClusterService:
    """The ``cluster`` service of a kernel whose configuration has a ``cluster`` section."""
    try:
        from .backend import ClusterService
    except ImportError as exc:
        raise RuntimeError(f"cluster needs Ray ({exc}): pip install '{EXTRA}'") from None
    return ClusterService(kernel)
