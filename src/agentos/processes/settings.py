"""The ``processes`` section of the kernel configuration."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.requests import MAX_UID
from ..sandbox.spec import DEFAULT_AGENT_UID
from ..units import parse_bytes, parse_duration
from .launcher import PASSED_ENV
from .logs import LogSettings

_KEYS = ("log_max_bytes", "logs", "kill_grace", "stop_grace", "keep_ended", "cgroups", "pass_env", "agent_uid",
         "exposures_per_agent", "connections_per_exposure", "files", "list_page")


@dataclass(frozen=True)
class ProcessSettings:
    """How agents are run, logged and stopped."""

    #: Cap of one agent log file; one older file of the same size is kept beside it.
    log_max_bytes: int = 8 * 1024 * 1024
    #: How many ended agents' logs are kept, and how long, per project (``logs.py``).
    logs: LogSettings = LogSettings()
    #: Seconds between KILL's SIGTERM and SIGKILL, unless the request gives ``grace``.
    kill_grace: float = 5.0
    #: The same at kernel shutdown, for every agent at once.
    stop_grace: float = 3.0
    #: Ended agents LIST and WAIT still know about; older ones are forgotten.
    keep_ended: int = 256
    #: ``"auto"`` detects the host's cgroups; ``"none"`` runs agents without any.
    cgroups: str = "auto"
    #: Kernel environment variables agents inherit (the rest, API keys included, stays out).
    pass_env: tuple[str, ...] = PASSED_ENV
    #: The host uid and gid sandboxed agents of a root kernel run as (never 0); a kernel
    #: that is not root runs them as its own uid. See docs/sandbox.md.
    agent_uid: int = DEFAULT_AGENT_UID
    #: EXPOSEs open at once on one agent (each holds a helper process and a socket file).
    exposures_per_agent: int = 16
    #: Forwarded connections open at once through one exposure; more are closed at accept.
    connections_per_exposure: int = 64
    #: Entries in one LIST page: its ``limit`` when none is given, and the most it may ask for.
    list_page: int = 100

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ProcessSettings:
        unknown = sorted(set(section) - set(_KEYS))
        if unknown:
            raise ValueError(f"processes: unknown setting(s) {unknown}; known: {list(_KEYS)}")
        defaults = cls()
        cgroups = section.get("cgroups", defaults.cgroups)
        if cgroups not in ("auto", "none"):
            raise ValueError(f"processes.cgroups must be 'auto' or 'none', got {cgroups!r}")
        keep = section.get("keep_ended", defaults.keep_ended)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"processes.keep_ended must be a non-negative integer, got {keep!r}")
        extra = section.get("pass_env", [])
        if not isinstance(extra, list) or not all(isinstance(v, str) for v in extra):
            raise ValueError("processes.pass_env must be a list of variable names")
        agent_uid = section.get("agent_uid", defaults.agent_uid)
        if isinstance(agent_uid, bool) or not isinstance(agent_uid, int) or not 0 < agent_uid <= MAX_UID:
            raise ValueError(f"processes.agent_uid must be a uid in 1..{MAX_UID} (agents never run as root), "
                             f"got {agent_uid!r}")
        counts = {}
        for name in ("exposures_per_agent", "connections_per_exposure", "list_page"):
            value = section.get(name, getattr(defaults, name))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"processes.{name} must be a positive integer, got {value!r}")
            counts[name] = value
        return cls(
            log_max_bytes=parse_bytes(section.get("log_max_bytes", defaults.log_max_bytes),
                                      "processes.log_max_bytes"),
            logs=LogSettings.from_section(section.get("logs")),
            kill_grace=parse_duration(section.get("kill_grace", defaults.kill_grace), "processes.kill_grace"),
            stop_grace=parse_duration(section.get("stop_grace", defaults.stop_grace), "processes.stop_grace"),
            keep_ended=keep, cgroups=cgroups,
            pass_env=tuple(dict.fromkeys((*PASSED_ENV, *extra))), agent_uid=agent_uid, **counts,
        )
