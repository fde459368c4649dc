"""``ps``/``top`` views: --sort, plain text when piped and STATUS coloured on a terminal, ``top --json``
with a CPU value from the first refresh; against a real kernel."""
from __future__ import annotations

import json
import os
from pathlib import Path

from agentos.cli.agents import PS_COLUMNS, paint_status, row
from agentos.cli.main import main
from agentos.cli.output import Painter, table


def test_sort_json_and_plain_output(kernel, tmp_path: Path, capsys) -> None:
    busy, idle = tmp_path / "busy.py", tmp_path / "idle.py"
    busy.write_text("while True:\n    pass\n")
    idle.write_text("import time\ntime.sleep(300)\n")
    client = kernel.client()
    for name, script in (("zz-busy", busy), ("aa-idle", idle), ("mm-idle", idle)):
        client.spawn(name, str(script), sandboxed=False, limits={"memory": None, "pids": None, "cpu": None})
    socket = ["--socket", str(kernel.socket_path)]

    assert main(["ps", *socket, "--sort", "name"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["aa-idle", "mm-idle", "zz-busy"]
    assert "\033[" not in out  # piped: plain
    assert main(["ps", *socket]) == 0  # default: by start
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["zz-busy", "aa-idle", "mm-idle"]

    assert main(["top", *socket, "-n", "1", "--json", "--sort", "cpu"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    view = json.loads(line)
    assert view["kernel"]["pid"] == kernel.pid
    agents = view["agents"]
    if os.geteuid() == 0:  # a cgroup measures each agent's CPU from its first refresh
        assert agents[0]["name"] == "zz-busy" and all(isinstance(a["cpu_percent"], float) for a in agents)
    assert sorted(a["name"] for a in agents) == ["aa-idle", "mm-idle", "zz-busy"]
    assert {"tokens", "usd", "status", "usage"} <= set(agents[0])
    for name in ("zz-busy", "aa-idle", "mm-idle"):
        client.kill(name, grace=5)


def test_status_is_coloured_on_a_terminal_without_breaking_alignment() -> None:
    infos = [{"name": "a", "id": "1", "pid": 2, "status": "running", "started_at": 0.0},
             {"name": "bb", "id": "2", "pid": 3, "status": "failed", "exit_code": 1, "started_at": 0.0}]
    text = table(PS_COLUMNS, [row(info, {}, "-", 10.0) for info in infos])
    assert paint_status(text, infos, Painter(False)) == text
    painted = paint_status(text, infos, Painter(True)).split("\n")
    assert "\033[32mrunning\033[0m" in painted[1] and "\033[31mfailed (1)\033[0m" in painted[2]
    plain = [line.replace("\033[32m", "").replace("\033[31m", "").replace("\033[0m", "") for line in painted]
    assert "\n".join(plain) == text
