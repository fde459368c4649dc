"""The NOOP benchmark cases, their goals, and the kernel-vs-reference ratio table."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Servers compared in every case; ``c_epoll`` is the reference the ratios divide by.
TARGETS = ("kernel", "c_epoll", "uvloop")
REFERENCE = "c_epoll"
PIPELINE_BATCH = 10_000
LARGE_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class Case:
    """One traffic shape, with the C load client's options and the kernel's goal."""

    name: str
    client_options: dict[str, Any]
    #: The kernel must reach this fraction of the C reference's frames/s ...
    min_ratio: float | None = None
    #: ... or this absolute rate.
    min_frames_per_s: float | None = None

    def goal(self) -> str:
        if self.min_ratio is not None:
            return f">= {self.min_ratio:g}x C"
        return f">= {self.min_frames_per_s / 1e6:g}M frames/s"  # type: ignore[operator]

    def met(self, frames_per_s: float, ratio: float | None) -> bool | None:
        if self.min_ratio is not None:
            return None if ratio is None else ratio >= self.min_ratio
        return frames_per_s >= self.min_frames_per_s  # type: ignore[operator]


CASES = {case.name: case for case in (
    Case("sequential", {"mode": "sequential"}, min_ratio=0.95),
    Case("8-clients", {"mode": "sequential", "procs": 8}, min_ratio=0.9),
    Case("pipelined-10k", {"mode": "pipelined", "batch": PIPELINE_BATCH}, min_frames_per_s=10e6),
    Case("64KiB", {"mode": "sequential", "payload": LARGE_PAYLOAD}, min_ratio=0.9),
)}


@dataclass
class Measurement:
    case: str
    driver: str  # "c" (the C load client) or "sdk" (agentos.Client)
    target: str
    frames_per_s: float
    p50_ns: float | None = None
    p99_ns: float | None = None
    runs: list[float] = field(default_factory=list)  # frames/s of each run, for the spread
    #: Server CPU time per frame (median over runs); C driver only.
    cpu_ns_per_frame: float | None = None


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The load-client result with the median frames/s."""
    return sorted(results, key=lambda r: r["frames_per_s"])[len(results) // 2]


class RatioTable:
    """Collects measurements during the session; renders and saves the comparison."""

    def __init__(self) -> None:
        self.measurements: list[Measurement] = []
        self.notes: dict[str, str] = {}

    def add(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)

    def _find(self, case: str, driver: str, target: str) -> Measurement | None:
        for m in self.measurements:
            if (m.case, m.driver, m.target) == (case, driver, target):
                return m
        return None

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for driver in ("c", "sdk"):
            for name, case in CASES.items():
                ref = self._find(name, driver, REFERENCE)
                for target in TARGETS:
                    m = self._find(name, driver, target)
                    if m is None:
                        continue
                    ratio = m.frames_per_s / ref.frames_per_s if ref else None
                    row = asdict(m)
                    row["ratio_to_c"] = ratio
                    row["cpu_ratio_to_c"] = (ref.cpu_ns_per_frame / m.cpu_ns_per_frame
                                             if ref and ref.cpu_ns_per_frame and m.cpu_ns_per_frame
                                             else None)
                    if target == "kernel" and driver == "c":
                        row["goal"] = case.goal()
                        row["met"] = case.met(m.frames_per_s, ratio)
                    rows.append(row)
        return rows

    def render(self) -> list[str]:
        lines = [(f"{'driver':<6} {'case':<14} {'target':<8} {'frames/s':>12} {'spread':>7} "
                  f"{'p50 us':>9} {'p99 us':>9} {'x C':>6} {'cpu ns/fr':>9} {'cpu x C':>7}  goal")]
        for row in self.rows():
            runs = row["runs"]
            spread = ""
            if len(runs) > 1:
                spread = f"{(max(runs) - min(runs)) / statistics.median(runs):.0%}"
            ratio = _fmt(row["ratio_to_c"], ".2f")
            goal = ""
            if "goal" in row:
                goal = f"{row['goal']}: {'met' if row['met'] else 'NOT MET'}"
            lines.append(
                f"{row['driver']:<6} {row['case']:<14} {row['target']:<8} "
                f"{row['frames_per_s']:>12,.0f} {spread:>7} {_us(row['p50_ns']):>9} "
                f"{_us(row['p99_ns']):>9} "
                f"{ratio:>6} {_fmt(row['cpu_ns_per_frame'], ',.0f'):>9} "
                f"{_fmt(row['cpu_ratio_to_c'], '.2f'):>7}  {goal}")
        return lines

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "reference": REFERENCE, "notes": self.notes, "rows": self.rows()}
        path.write_text(json.dumps(doc, indent=2) + "\n")


def _us(ns: float | None) -> str:
    return _fmt(None if ns is None else ns / 1000, ".1f")


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
