"""HTTP egress for agents without network: the kernel fetches, only from allowed domains."""
from .policy import EgressPolicy

__all__ = ["EgressPolicy"]
