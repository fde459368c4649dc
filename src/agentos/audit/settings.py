"""The ``audit`` section of the kernel configuration: when the log rotates and what it keeps."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..units import parse_bytes, parse_duration

_KEYS = ("max_size", "rotate_every", "keep", "max_age", "compress")


@dataclass(frozen=True)
class AuditSettings:
    """Rotation and retention of ``<state_dir>/audit.log``."""

    #: The current file is rotated once it holds this many bytes...
    max_size: int = 64 * 1024 * 1024
    #: ...or once its oldest record is this many seconds old, however small (None: by size only).
    rotate_every: float | None = 24 * 3600.0
    #: Rotated files kept; past that the oldest are deleted.
    keep: int = 30
    #: Rotated files last written longer ago than this many seconds are deleted (None: by count only).
    max_age: float | None = 90 * 24 * 3600.0
    #: Rotated files are gzipped, one gzip member per index block, so a query still reads
    #: only the blocks it needs.
    compress: bool = True

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> AuditSettings:
        unknown = sorted(set(section) - set(_KEYS))
        if unknown:
            raise ValueError(f"audit: unknown setting(s) {unknown}; known: {list(_KEYS)}")
        defaults = cls()
        keep = section.get("keep", defaults.keep)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"audit.keep: expected a positive number of files, got {keep!r}")
        compress = section.get("compress", defaults.compress)
        if not isinstance(compress, bool):
            raise ValueError(f"audit.compress: expected true or false, got {compress!r}")
        return cls(max_size=parse_bytes(section.get("max_size", defaults.max_size), "audit.max_size"),
                   rotate_every=_age(section, "rotate_every", defaults.rotate_every),
                   keep=keep, max_age=_age(section, "max_age", defaults.max_age), compress=compress)


def _age(section: Mapping[str, Any], key: str, default: float | None) -> float | None:
    """A positive duration, or null for none."""
    if key not in section:
        return default
    value = section[key]
    if value is None:
        return None
    seconds = parse_duration(value, f"audit.{key}")
    if seconds <= 0:
        raise ValueError(f"audit.{key}: must be positive (or null for no limit), got {value!r}")
    return seconds
