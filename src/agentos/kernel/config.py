"""Kernel configuration: where the socket and the state live, protocol and connection limits."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import DEFAULT_MAX_PAYLOAD


def default_socket_path() -> Path:
    """``AGENTOS_SOCKET``, else /run/agentos for root, else the user's runtime dir."""
    env = os.environ.get("AGENTOS_SOCKET")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/agentos/kernel.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(f"/tmp/agentos-{os.geteuid()}")
    return base / "agentos" / "kernel.sock"


def default_state_dir() -> Path:
    """``AGENTOS_STATE_DIR``, else /var/lib/agentos for root, else the user's state dir."""
    env = os.environ.get("AGENTOS_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/agentos")
    state = os.environ.get("XDG_STATE_HOME")
    return (Path(state) if state else Path.home() / ".local" / "state") / "agentos"


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections one client may hold at once (the ``connections`` section).

    Past a cap the kernel answers the new connection with a ``busy`` error frame
    naming the cap, then closes it; the client's other connections carry on.
    """

    #: Connections of one outside client uid (by SO_PEERCRED), the kernel's own uid included.
    per_uid: int = 4096
    #: Connections of one agent: the one it inherits and any it opens itself.
    per_agent: int = 64

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ConnectionLimits:
        unknown = sorted(set(section) - {"per_uid", "per_agent"})
        if unknown:
            raise ValueError(f"connections: unknown setting {', '.join(map(repr, unknown))} "
                             "(expected per_uid, per_agent)")
        for name, value in section.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"connections.{name}: expected a positive integer, got {value!r}")
        return cls(**section)


@dataclass
class KernelConfig:
    """Everything the kernel is told at start; each subsystem reads its own section."""

    socket_path: Path = field(default_factory=default_socket_path)
    state_dir: Path = field(default_factory=default_state_dir)
    socket_mode: int = 0o600
    log_json: bool = False
    log_level: str = "INFO"
    max_payload: int = DEFAULT_MAX_PAYLOAD
    #: Stop reading a client whose unsent replies exceed this many bytes...
    write_high_water: int = 4 * 1024 * 1024
    #: ...and start again once they drain below this.
    write_low_water: int = 1024 * 1024
    #: Stop reading a client with this many syscalls still running in the kernel.
    max_inflight: int = 4096
    #: Per-subsystem settings (``llm``, ``sandbox``, ``state`` ...), from a manifest's kernel section.
    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name) or {})

    @property
    def connections(self) -> ConnectionLimits:
        """The per-uid and per-agent connection caps (section ``connections``)."""
        return ConnectionLimits.from_section(self.section("connections"))
