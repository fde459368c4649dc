"""Shared by the adversarial agents: JSON-line results, and READY when run under a kernel."""
import json
import os


def emit(**fields):
    """Print one machine-checkable result line."""
    print(json.dumps(fields), flush=True)


def ready():
    """Tell the kernel this agent is up (only when started by one)."""
    if "AGENTOS_FD" in os.environ or "AGENTOS_SOCKET" in os.environ:
        import agentos

        agentos.Client().ready()

