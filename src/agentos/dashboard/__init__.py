"""``agentos dashboard``: a web page on a loopback port showing what the kernel shows its user.

It is a client of the kernel like the CLI, not part of it: every number comes from a syscall
(LIST, USAGE, LOGS, AUDIT, DEAD_LETTERS, SUBSCRIBE, APPROVALS) and every button is one (KILL,
START, PAUSE, RESUME, APPROVALS), over the socket, as the uid that started it. docs/observability.md#dashboard says why.
"""
from __future__ import annotations

from .app import Dashboard
from .auth import Listen, parse_listen

__all__ = ["Dashboard", "Listen", "parse_listen"]
