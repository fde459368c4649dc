"""Capabilities, who holds them, and the guard that checks every syscall against them."""
from .capabilities import ALL_CAPABILITIES, Capability, parse_capabilities
from .principal import caller_id
from .registry import Permissions

__all__ = ["ALL_CAPABILITIES", "Capability", "Permissions", "caller_id", "parse_capabilities"]
