"""The audit trail: every syscall's time, caller, opcode, outcome and latency, never its payload."""
from .log import AuditLog, matches, read_records

__all__ = ["AuditLog", "matches", "read_records"]
