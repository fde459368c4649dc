"""``agentos validate FILE``: a summary when valid; otherwise one ``file:line:col: error: ... (fix: ...)`` per line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentos.cli.main import main


def test_valid_manifest_prints_a_summary_in_start_order(project: Path, capsys, monkeypatch) -> None:
    (project / "team.yaml").write_text(
        "agents:\n"
        "  worker: {script: agent.py, replicas: 2, depends_on: [db], restart: {policy: on-failure}}\n"
        "  db: {command: [bin/tool, --serve], limits: {memory: 1Gi, pids: unlimited},"
        " sandbox: {enabled: false}}\n")
    monkeypatch.chdir(project)
    assert main(["validate", "team.yaml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "team.yaml: valid, 3 agents",
        (f"  db      command {project}/bin/tool --serve; sandbox OFF, network on; memory 1Gi, cpu 1, pids unlimited; "
        "restart never"),
        "  worker  script agent.py; x2; sandbox on; memory 512Mi, cpu 1, pids 128; restart on-failure; after db",
    ]


def test_quiet_prints_nothing(project: Path, capsys) -> None:
    (project / "m.yaml").write_text("agents: {a: {script: agent.py}}\n")
    assert main(["validate", "-q", str(project / "m.yaml")]) == 0
    assert capsys.readouterr() == ("", "")


def test_errors_are_one_line_each_on_stderr(project: Path, capsys, monkeypatch) -> None:
    (project / "bad.yaml").write_text("agents:\n  a:\n    script: gone.py\n    replicas: -1\n")
    monkeypatch.chdir(project)
    assert main(["validate", "bad.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        (f"bad.yaml:3:13: error: agents.a.script: gone.py ({project}/gone.py) does not exist "
        "(fix: create it, or fix the path; relative paths start at the manifest's directory)"),
        ("bad.yaml:4:15: error: agents.a.replicas: must be between 1 and 1000, got -1 "
        "(fix: set replicas to a value between 1 and 1000)"),
    ]


def test_the_installed_command_never_shows_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("agents:\n  a: {script: [unclosed\n")
    for target in ("broken.yaml", "missing.yaml", "."):
        result = subprocess.run([sys.executable, "-m", "agentos.cli.main", "validate", target], cwd=tmp_path,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        # An editable dev install may print its rebuild first; the error is one line of its own.
        [line] = [line for line in result.stderr.splitlines() if ": error: " in line]
        assert line.startswith(("broken.yaml:3:1: error: invalid YAML", "missing.yaml: error: no such file",
                                ".: error: is a directory")), line
