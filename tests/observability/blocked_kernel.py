"""Run as ``python blocked_kernel.py kernel [options]``: ``agentos`` with OpenTelemetry and
prometheus_client unimportable, as when the agentos[otel] extra is not installed. Each
attempt to import them is appended to ``$BLOCKED_IMPORTS_LOG``."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: The top-level packages refused: the otel extra's, or those ``$BLOCKED_MODULES`` names (comma-separated).
BLOCKED = tuple(os.environ.get("BLOCKED_MODULES", "opentelemetry,prometheus_client,google.protobuf").split(","))


class Blocker:
    """A meta path finder ahead of all others that refuses the extra's packages."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
                log.write(f"{name}\n")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())

from agentos.cli.main import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
