"""Resource limits for one agent, parsed from a SPAWN request's ``limits`` object."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..units import parse_bytes, parse_cpu

#: The seed's ``cpu_quota`` is CPU microseconds per 100 ms period (cgroup ``cpu.max`` quota).
SEED_CPU_PERIOD_US = 100_000

_KEYS = ("memory", "max_pids", "pids", "cpu", "cpu_quota")

#: The largest limits the drivers can write (the wire schema may be stricter): byte counts
#: stay well inside the kernel's 64 bits, a quota inside cpu.max's range (about 1.7e13 us), and
#: tasks past PID_MAX_LIMIT cannot exist anyway.
MAX_MEMORY = 1 << 62
MAX_CPU = 1_000_000.0
MAX_PIDS = 1 << 31
#: Linux's PID_MAX_LIMIT: the largest pids.max the kernel accepts.
PID_MAX_LIMIT = 4 * 1024 * 1024
#: The CFS period every agentos cgroup uses: the kernel default, 100 ms.
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What an agent may use; ``None`` means no limit was asked for."""

    #: Bytes of memory (RAM, and swap where the driver can cap it).
    memory: int | None = None
    #: Most tasks (processes and threads) alive at once in the agent's tree.
    pids: int | None = None
    #: CPU bandwidth in cores (0.5 = half of one core).
    cpu: float | None = None

    def __post_init__(self) -> None:
        # Checked here, not only in from_request: every way of building limits reaches the kernel.
        for name, value, top in (("memory", self.memory, MAX_MEMORY), ("pids", self.pids, MAX_PIDS)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 < value <= top):
                raise ValueError(f"limits.{name}: expected an integer from 1 to {top}, got {value!r}")
        if self.cpu is not None and (isinstance(self.cpu, bool) or not isinstance(self.cpu, (int, float))
                                     or not math.isfinite(self.cpu) or not 0 < self.cpu <= MAX_CPU):
            raise ValueError(f"limits.cpu: expected a number of cores above 0 and at most {MAX_CPU:g}, "
                             f"got {self.cpu!r}")

    @classmethod
    def from_request(cls, raw: Mapping[str, Any] | None) -> Limits:
        """Parse ``{"memory": "256Mi", "pids"|"max_pids": 64, "cpu": 0.5 | "cpu_quota": 50000}``.

        Raises ValueError naming the bad field.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"limits: expected an object, got {type(raw).__name__}")  # noqa: TRY004
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise ValueError(f"limits: unknown field(s) {unknown}; known: {list(_KEYS)}")
        if raw.get("pids") is not None and raw.get("max_pids") is not None:
            raise ValueError("limits: give either pids or max_pids, not both")
        if raw.get("cpu") is not None and raw.get("cpu_quota") is not None:
            raise ValueError("limits: give either cpu (cores) or cpu_quota (us per 100ms), not both")
        memory = raw.get("memory")
        pids = raw.get("pids", raw.get("max_pids"))
        cpu = raw.get("cpu")
        quota = raw.get("cpu_quota")
        return cls(
            memory=None if memory is None else parse_bytes(memory, "limits.memory"),
            pids=None if pids is None else _positive_int(pids, "limits.pids"),
            cpu=(parse_cpu(cpu, "limits.cpu") if cpu is not None
                 else None if quota is None
                 else _positive_int(quota, "limits.cpu_quota") / SEED_CPU_PERIOD_US),
        )

    def requested(self) -> tuple[str, ...]:
        """Names of the limits that were asked for, in a fixed order."""
        return tuple(name for name in ("memory", "pids", "cpu") if getattr(self, name) is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"memory": self.memory, "pids": self.pids, "cpu": self.cpu}


def pids_max(pids: int) -> str:
    """The ``pids.max`` value for a pids limit."""
    return str(min(pids, PID_MAX_LIMIT))


def cpu_quota_us(cores: float) -> int:
    """CPU microseconds per ``CPU_PERIOD_US`` for a limit in cores (the kernel's minimum is 1 ms)."""
    return max(1000, round(cores * CPU_PERIOD_US))


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}: expected a positive integer, got {value!r}")
    return value
