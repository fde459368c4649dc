"""Human units for limits: ``"256Mi"``, ``"1G"``, ``0.5`` cores, durations like ``"30s"``."""
from __future__ import annotations

import math
import re

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?)?[bB]?\s*$")
_POW = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
        "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Beyond these a value is a mistake (or an attack on a timer queue), never a wish.
MAX_BYTES = 1 << 50
MAX_CORES = 65536.0
MAX_SECONDS = 365 * 24 * 3600.0


def parse_bytes(value: int | float | str, what: str = "size") -> int:
    """``256Mi`` -> 268435456, ``1G`` -> 10**9, plain numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a size such as 256Mi, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _BYTES.match(value)
        if not match:
            raise ValueError(f"{what}: {value!r} is not a size (examples: 512Mi, 1Gi, 1048576)")
        number, unit = float(match.group(1)), (match.group(2) or "")
    scaled = number * _POW.get(unit.lower(), 1)
    if not math.isfinite(scaled) or scaled > MAX_BYTES:
        raise ValueError(f"{what}: {value!r} is more than 1 PiB")
    result = int(scaled)
    if result <= 0:
        raise ValueError(f"{what}: must be positive, got {value!r}")
    return result


def parse_cpu(value: int | float | str, what: str = "cpu") -> float:
    """Cores as a float: ``0.5``, ``2``, ``"500m"`` (millicores) or ``"50%"`` of one core."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected cores such as 0.5, got {value!r}")
    try:
        if isinstance(value, str) and value.strip().endswith("m"):
            cores = float(value.strip()[:-1]) / 1000
        elif isinstance(value, str) and value.strip().endswith("%"):
            cores = float(value.strip()[:-1]) / 100
        else:
            cores = float(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a number of cores (examples: 0.5, 2, 500m)") from None
    if not math.isfinite(cores) or cores > MAX_CORES:
        raise ValueError(f"{what}: {value!r} is not a number of cores this host could have")
    if not cores > 0:
        raise ValueError(f"{what}: must be positive, got {value!r}")
    return cores


def parse_duration(value: int | float | str, what: str = "duration") -> float:
    """Seconds as a float: ``30``, ``"1.5s"``, ``"250ms"``, ``"5m"``."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as 30s, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{what}: {value!r} is not a duration (examples: 30s, 250ms, 5m)")
        seconds = float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{what}: {value!r} is not a duration under a year")
    if seconds < 0:
        raise ValueError(f"{what}: must not be negative, got {value!r}")
    return seconds
