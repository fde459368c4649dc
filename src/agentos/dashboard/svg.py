"""Charts as inline SVG strings: no script, no library, nothing fetched."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 120, 24


def sparkline(values: Sequence[float], *, label: str, ceiling: float | None = None) -> str:
    """A line of ``values`` (oldest first) scaled to ``ceiling`` (else their maximum), with
    ``label`` as its accessible title. Fewer than two values draw a flat baseline."""
    title = f"<title>{escape(label)}</title>"
    top = max([ceiling or 0.0, *values, 1e-9])
    if len(values) < 2:
        return (f'<svg class="spark" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
                f'role="img">{title}<line x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}"/></svg>')
    step = WIDTH / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{HEIGHT - 1 - (v / top) * (HEIGHT - 2):.1f}" for i, v in enumerate(values))
    return (f'<svg class="spark" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">'
            f'{title}<polyline points="{points}"/></svg>')


def bar(used: float, limit: float | None, *, label: str) -> str:
    """A horizontal budget bar: ``used`` of ``limit`` (no limit: an empty outline); past 80% it
    is drawn as a warning, at 100% as exhausted."""
    fraction = 0.0 if not limit else min(1.0, used / limit)
    level = "over" if fraction >= 1.0 else "warn" if fraction >= 0.8 else "ok"
    return (f'<svg class="bar {level}" viewBox="0 0 {WIDTH} 10" width="{WIDTH}" height="10" role="img">'
            f'<title>{escape(label)}</title><rect class="track" x="0" y="0" width="{WIDTH}" height="10"/>'
            f'<rect class="fill" x="0" y="0" width="{fraction * WIDTH:.1f}" height="10"/></svg>')
