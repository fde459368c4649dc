"""The wheel carries the dashboard's page assets: it is served from the package, never fetched."""
from __future__ import annotations

from tests.test_packaging import _installed_files


def test_the_wheel_ships_the_dashboards_static_files() -> None:
    files = _installed_files()
    assert {"agentos/dashboard/static/dashboard.js", "agentos/dashboard/static/dashboard.css"} <= set(files)
