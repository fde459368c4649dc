"""Retention of ended agents' logs (``processes.logs``): by count and age, per project, and LOGS
of an agent whose log was pruned, in this kernel and in the next (the ledger's history)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentos import NotFound
from agentos.processes.logs import LogRetention, LogSettings
from agentos.processes.settings import ProcessSettings
from agentos.testing.kernel import KernelProcess

from .conftest import agent

DAY = 24 * 3600.0


def settings(**section: object) -> LogSettings:
    return ProcessSettings.from_section({"logs": section}).logs


def make_log(path: Path, age: float, rotated: bool = False) -> Path:
    """A log file last written ``age`` seconds ago (with its ``.log.1``, if ``rotated``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for file in (path, path.with_name(path.name + ".1")) if rotated else (path,):
        file.write_text("output\n")
        os.utime(file, (time.time() - age, time.time() - age))
    return path


def logs_in(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.is_file())


def test_an_earlier_kernels_logs_are_kept_by_count_and_age_per_project(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for n in range(5):  # agents of no project: a-0 oldest
        make_log(logs / f"a-{n}.log", age=(5 - n) * 60, rotated=n == 0)
    for n in range(3):  # a project whose override keeps them all, for a day
        make_log(logs / "ci" / f"b-{n}.log", age=(3 - n) * 60)
    make_log(logs / "ci" / "stale-0.log", age=2 * DAY)
    make_log(logs / "web" / "old-0.log", age=10 * DAY)  # past the default age
    make_log(logs / "web" / "new-0.log", age=60)

    retention = LogRetention(logs, settings(keep=3, max_age="72h", projects={"ci": {"keep": None, "max_age": "24h"}}))
    retention.load()

    assert logs_in(logs) == ["a-2.log", "a-3.log", "a-4.log"]  # the two oldest (a-0 with its .log.1) went
    assert logs_in(logs / "ci") == ["b-0.log", "b-1.log", "b-2.log"]  # no count limit; stale-0 is past a day
    assert logs_in(logs / "web") == ["new-0.log"]
    assert retention.deleted == 4


def test_each_end_deletes_its_own_projects_oldest_past_keep(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    retention = LogRetention(logs, settings(keep=2, projects={"big": {"keep": 4}}))
    logs.mkdir()
    retention.load()
    now = time.time()
    for n in range(6):
        for project in (None, "big"):
            path = make_log(retention.path_for(f"x{n}", f"id{n}", project), age=0)
            retention.ended(path, project, now + n)
    assert logs_in(logs) == ["x4-id4.log", "x5-id5.log"]
    assert logs_in(logs / "big") == ["x2-id2.log", "x3-id3.log", "x4-id4.log", "x5-id5.log"]
    assert oct((logs / "big").stat().st_mode & 0o777) == "0o700"


def test_a_sweep_deletes_only_what_is_past_its_age(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    retention = LogRetention(logs, settings(keep=None, max_age="1h", projects={"slow": {"max_age": "2h"}}))
    retention.load()
    start = time.time()
    for n in range(4):
        for project in (None, "slow"):
            retention.ended(make_log(retention.path_for(f"x{n}", "i", project), age=0), project,
                            start + n * 1800)  # ended 0, 30, 60 and 90 minutes after start
    retention.sweep(now=start + 3600 + 1)  # two hours for "slow": none of its logs is that old
    assert logs_in(logs) == ["x1-i.log", "x2-i.log", "x3-i.log"]
    assert len(logs_in(logs / "slow")) == 4
    retention.sweep(now=start + 3 * 3600)
    assert logs_in(logs) == [] and logs_in(logs / "slow") == ["x2-i.log", "x3-i.log"]


@pytest.mark.parametrize("section, key", [
    ({"keep": -1}, "processes.logs.keep"),
    ({"keep": True}, "processes.logs.keep"),
    ({"max_age": "soon"}, "processes.logs.max_age"),
    ({"kept": 3}, "processes.logs"),
    ({"projects": {"Not A Project": {}}}, "processes.logs.projects"),
    ({"projects": {"ci": {"keep": "all"}}}, "processes.logs.projects.ci.keep"),
    ({"projects": {"ci": 3}}, "processes.logs.projects.ci"),
])
def test_a_bad_setting_names_its_key(section: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        ProcessSettings.from_section({"logs": section})


MANIFEST = """\
version: 1
kernel:
  processes:
    logs:
      keep: 2
      projects:
        keepall: {keep: null}
agents:
  unused: {command: [sh, -c, 'true']}
"""


def test_logs_of_a_pruned_agent_say_so_in_this_kernel_and_the_next(tmp_path: Path) -> None:
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text(MANIFEST)
    kernel = KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]).start()
    try:
        client = kernel.client()
        ids: dict[str, list[str]] = {"ci": [], "keepall": []}
        for n in range(4):
            for project in ids:
                info = client.spawn(f"job{n}", agent("printer"), args=["1", "0", "0"], sandboxed=False,
                                    project=project)
                client.wait(id=info["id"], timeout=60)
                ids[project].append(info["id"])
        logs = kernel.state_dir / "logs"
        assert logs_in(logs / "ci") == sorted(f"job{n}-{ids['ci'][n]}.log" for n in (2, 3))
        assert len(logs_in(logs / "keepall")) == 4
        assert client.logs(id=ids["ci"][3]) == "line 0\n"
        assert client.logs(id=ids["keepall"][0]) == "line 0\n"
        with pytest.raises(NotFound, match="its log was pruned by log retention") as pruned:
            client.logs(id=ids["ci"][0])
        assert pruned.value.details["pruned"] is True and pruned.value.details["id"] == ids["ci"][0]

        # The next kernel reads the ledger: the pruned agent is still known, and still pruned; a
        # log aged out while no kernel ran is pruned by the next one's start.
        old = logs / "keepall" / f"job0-{ids['keepall'][0]}.log"
        os.utime(old, (time.time() - 40 * DAY, time.time() - 40 * DAY))  # past the 30-day default
        kernel.restart()
        client = kernel.client()
        for gone in (ids["ci"][0], ids["keepall"][0]):
            with pytest.raises(NotFound, match="pruned") as pruned:
                client.logs(id=gone)
            assert pruned.value.details["pruned"] is True
        assert client.logs(id=ids["ci"][2]) == "line 0\n"
        assert not old.exists() and len(logs_in(logs / "keepall")) == 3
    finally:
        kernel.stop_checked()
