"""What the CLI prints: colour only on a terminal, human sizes and durations, aligned tables."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

_RESET = "\033[0m"
#: Colours given to agent names in turn (cyan, yellow, green, magenta, blue, then bright ones).
_NAME_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33"}


def wants_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set or the terminal is dumb."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Painter:
    """Wraps text in ANSI colours, or leaves it alone when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._names: dict[str, str] = {}

    def style(self, text: str, style: str) -> str:
        return f"\033[{_STYLES[style]}m{text}{_RESET}" if self.enabled else text

    def name(self, name: str, width: int = 0) -> str:
        """``name`` padded to ``width``, in a colour of its own that stays the same for the run."""
        padded = name.ljust(width)
        if not self.enabled:
            return padded
        colour = self._names.setdefault(name, _NAME_COLOURS[len(self._names) % len(_NAME_COLOURS)])
        return f"\033[{colour}m{padded}{_RESET}"


class PipeSafe:
    """A stream whose reader may go away (``agentos up -d FILE | head -1``) without stopping the
    work: after EPIPE everything written goes to /dev/null, and the command carries on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        # What the buffer still holds now drains into /dev/null.
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def size(value: int | None) -> str:
    """Bytes as ``512Mi`` when exact, ``1.5Gi`` otherwise; None is unlimited."""
    if value is None:
        return "unlimited"
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= factor:
            whole, rest = divmod(value, factor)
            return f"{whole}{suffix}" if not rest else f"{value / factor:.1f}{suffix}"
    return f"{value}B"


def amount(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, no trailing blanks."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [headers, *rows])
