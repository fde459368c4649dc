"""Benchmark session: compile the C references, run the servers, print the ratio table.

Collected only when benchmarks/ is named on the command line (testpaths is tests/).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Goals,
    References,
    Server,
    build_references,
    ensure_agentos_importable,
    start_c_echo,
    start_kernel,
    start_uvloop_echo,
)
from noop_cases import RatioTable

ensure_agentos_importable()

_TABLE = pytest.StashKey[RatioTable]()
_GOALS = pytest.StashKey[Goals]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentos benchmarks")
    group.addoption("--noop-duration", type=float, default=0.6,
                    help="seconds each C load-client run measures (default 0.6)")
    group.addoption("--noop-runs", type=int, default=5,
                    help="C load-client runs per case and server; the median is reported")
    group.addoption("--noop-json", type=Path, default=None,
                    help="where to write the ratio table (default .benchmarks/noop-ratios.json)")
    group.addoption("--noop-cpu", type=int, default=None,
                    help="pin this session, hence every server and client, to one CPU: "
                         "steadier numbers on a shared or virtual machine")
    group.addoption("--think-storm", type=float, default=20.0,
                    help="seconds of the THINK 429-storm window, measured once calm and once "
                         "during the storm (default 20; the issue's figure is for 60)")


def pytest_configure(config: pytest.Config) -> None:
    table = config.stash[_TABLE] = RatioTable()
    config.stash[_GOALS] = Goals()
    cpu = config.getoption("--noop-cpu", None)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # children inherit it
    table.notes["cpus"] = f"pinned to CPU {cpu}" if cpu is not None else \
        f"unpinned, {len(os.sched_getaffinity(0))} CPUs"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # Files named on the command line are collected by pytest itself, whatever their name.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def ratio_table(pytestconfig: pytest.Config) -> RatioTable:
    return pytestconfig.stash[_TABLE]


@pytest.fixture(scope="session")
def goals(pytestconfig: pytest.Config) -> Goals:
    """Where a benchmark reports a figure against its goal (met / NOT MET, never asserted)."""
    return pytestconfig.stash[_GOALS]


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> References:
    return build_references(tmp_path_factory.mktemp("reference-build"))


class ServerPool:
    """Starts each server on first use and keeps it for the session."""

    def __init__(self, references: References, table: RatioTable) -> None:
        self._references = references
        self._table = table
        self._servers: dict[str, Server] = {}

    def get(self, name: str) -> Server:
        if name not in self._servers:
            self._servers[name] = self._start(name)
        return self._servers[name]

    def _start(self, name: str) -> Server:
        if name == "c_epoll":
            return start_c_echo(self._references)
        if name == "uvloop":
            pytest.importorskip("uvloop", reason="the uvloop reference needs .[bench] installed")
            return start_uvloop_echo()
        return start_kernel()

    def stop_all(self) -> None:
        kernel = self._servers.get("kernel")
        if kernel is not None:  # its start-up line says which compiled modules loaded
            found = re.search(r"extensions: ([^)]*)", kernel.log())
            self._table.notes["kernel_extensions"] = found.group(1) if found else "not logged"
        errors = []
        for server in self._servers.values():
            try:
                server.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        self._servers.clear()
        if errors:
            raise RuntimeError("\n".join(errors))


@pytest.fixture(scope="session")
def servers(references: References, ratio_table: RatioTable) -> Iterator[ServerPool]:
    pool = ServerPool(references, ratio_table)
    yield pool
    pool.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    goals = config.stash.get(_GOALS, None)
    if goals is not None and goals.rows:
        terminalreporter.section("agentos goals")
        for line in goals.render():
            terminalreporter.write_line(line)
        path = config.rootpath / ".benchmarks" / "goals.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(goals.rows, indent=2) + "\n")
        terminalreporter.write_line(f"written to {path}")
    table = config.stash.get(_TABLE, None)
    if table is None or not table.measurements:
        return
    terminalreporter.section("agentos NOOP: kernel vs C epoll reference")
    for line in table.render():
        terminalreporter.write_line(line)
    for key, value in table.notes.items():
        terminalreporter.write_line(f"{key}: {value}")
    path = config.getoption("--noop-json") or config.rootpath / ".benchmarks" / "noop-ratios.json"
    table.save(path)
    terminalreporter.write_line(f"written to {path}")
