"""Shared by the adversarial agents: JSON-line results, attempt outcomes, and READY under a kernel."""
import errno
import json
import os
from collections.abc import Callable


def emit(**fields: object) -> None:
    """Print one machine-checkable result line."""
    print(json.dumps(fields), flush=True)


def ready() -> None:
    """Tell the kernel this agent is up (only when started by one)."""
    if "AGENTOS_FD" in os.environ or "AGENTOS_SOCKET" in os.environ:
        import agentos

        agentos.Client().ready()



def outcome(fn: Callable[[], object]) -> str:
    """``"ok"`` if ``fn()`` succeeds, else the errno's name (``"EPERM"``) it failed with."""
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
