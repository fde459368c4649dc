"""What a kernel started here would get from cgroups, found by doing it: its driver made (a
delegated cgroup arranged), then undone. ``agentos doctor`` runs it on this host, and on each
cluster node (``cluster.survey``) when no kernel there can say."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import NoDriver, open_driver
from .detect import detect


@dataclass(frozen=True)
class Trial:
    driver: str
    roots: list[Path]
    enforceable: frozenset[str]
    #: Why nothing (or not everything) is enforced, when the driver says.
    reason: str | None
    #: The roots are a cgroup delegated to this user, not a hierarchy's root.
    delegated: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (what a node sends back)."""
        return {**asdict(self), "roots": [str(r) for r in self.roots], "enforceable": sorted(self.enforceable)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(driver=data["driver"], roots=[Path(r) for r in data["roots"]],
                   enforceable=frozenset(data["enforceable"]), reason=data["reason"], delegated=data["delegated"])


def trial() -> Trial:
    driver = open_driver(detect())
    if isinstance(driver, NoDriver):
        return Trial(driver.name, [], frozenset(), driver.reason, False)
    try:
        driver.start()
    except OSError as exc:
        return Trial(driver.name, driver.roots, frozenset(),
                     f"cannot create cgroups under {', '.join(map(str, driver.roots))}: {exc.strerror}", False)
    enforceable = driver.enforceable
    driver.stop()
    return Trial(driver.name, driver.roots, enforceable, None, driver.delegated)
