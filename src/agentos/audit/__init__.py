"""The audit trail: every syscall's time, caller, opcode, outcome and latency, never its payload."""
from .log import AuditLog, Position, matches
from .settings import AuditSettings

__all__ = ["AuditLog", "AuditSettings", "Position", "matches"]
