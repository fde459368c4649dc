"""Kernel-side supervision: restart policies with backoff and escalation (the ``supervisor`` service)."""
from .policy import RestartHistory, RestartPolicy
from .service import SupervisorService

__all__ = ["RestartHistory", "RestartPolicy", "SupervisorService"]
