"""Kernel-side supervision: restart policies with backoff and escalation (the ``supervisor`` service,
``supervision.service``, not imported here: the process service reads the policies, and the
supervisor the process table)."""
from .policy import RestartHistory, RestartPolicy

__all__ = ["RestartHistory", "RestartPolicy"]
