"""``agentos logs [-f] FILE`` and ``--all``: a manifest's (or every) agent's output, each line
prefixed with its name as compose prints a project; following takes in a restarted process
and ends once none runs or waits for a restart."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentos.cli.main import main
from agentos.manifest import load
from agentos.protocol import Op

MANIFEST = """\
agents:
  alpha:
    script: say.py
    args: [alpha]
    sandbox: {enabled: false}
    limits: {memory: unlimited, cpu: unlimited, pids: unlimited}
  beta-longer:
    script: say.py
    args: [beta]
    sandbox: {enabled: false}
    limits: {memory: unlimited, cpu: unlimited, pids: unlimited}
    restart: {policy: on-failure, max_restarts: 1, backoff: 10ms}
"""


def test_a_manifests_agents_prefixed(kernel, tmp_path: Path, capsys) -> None:
    # Each prints two lines; beta fails (and is restarted once), its first run only after `go` exists.
    (tmp_path / "say.py").write_text(
        "import os, sys, time\nprint(sys.argv[1], 'one', flush=True)\n"
        f"while sys.argv[1] == 'beta' and not os.path.exists({str(tmp_path / 'go')!r}):\n    time.sleep(0.02)\n"
        "print(sys.argv[1], 'two')\nsys.exit(sys.argv[1] == 'beta')\n")
    (tmp_path / "team.yaml").write_text(MANIFEST)
    socket = ["--socket", str(kernel.socket_path)]
    client = kernel.client()
    other = tmp_path / "other.py"
    other.write_text("print('not of this team')\n")
    client.spawn("outsider", str(other), sandboxed=False)
    # Another project's agent of a name the manifest uses is not of this team either.
    client.spawn("alpha", str(other), sandboxed=False, project="elsewhere")
    # As `up` starts them: in the manifest's project; the outsider is in none.
    manifest = load(tmp_path / "team.yaml")
    for request in manifest.spawn_requests(manifest.project):
        client._call(Op.SPAWN, request)
    follower = subprocess.Popen([sys.executable, "-m", "agentos", "logs", "-f", *socket, str(tmp_path / "team.yaml")],
                                stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()  # it follows both before beta may go on
    (tmp_path / "go").touch()
    out = follower.stdout.read()  # not communicate(): it would skip what readline() buffered
    assert follower.wait(timeout=60) == 0
    followed = [first.rstrip("\n"), *out.splitlines()]

    assert [a["status"] for a in client.list_agents(name="beta-longer")] == ["failed", "failed"]
    # The restarted beta's lines too, each agent's in order; the outsider is not of the team.
    assert [line for line in followed if line.startswith("alpha")] == ["alpha       | alpha one",
                                                                       "alpha       | alpha two"]
    assert [line for line in followed if line.startswith("beta")] == ["beta-longer | beta one",
                                                                      "beta-longer | beta two"] * 2

    assert main(["logs", *socket, str(tmp_path / "team.yaml")]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["alpha       | alpha one", "alpha       | alpha two",
                                                            "beta-longer | beta one", "beta-longer | beta two"]
    assert main(["logs", *socket, "--all"]) == 0
    assert "outsider    | not of this team" in capsys.readouterr().out.splitlines()
    assert main(["logs", "-f", *socket, "--all"]) == 0  # nothing runs: it ends at once
    assert main(["logs", *socket]) == 2
    assert "give an agent's NAME, a manifest FILE or --all" in capsys.readouterr().err
