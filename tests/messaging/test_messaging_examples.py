"""The pipeline and supervisor examples, run against a real kernel."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "agents" / "examples"
PROBER = Path(__file__).resolve().parents[1] / "permissions" / "agents" / "prober.py"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_parser_reasoner_verifier(kernel) -> None:
    run = load(EXAMPLES / "pipeline" / "run.py")
    client = kernel.client()
    results = run.run(client, ["2 + 3 * 4", "(1 + 2) / 4", "-(7 - 10) * 2", "1 / 0", "2 $ 3"],
                      sandboxed=False)
    assert [(r.get("answer"), r.get("verified")) for r in results[:3]] == [
        (14, True), (0.75, True), (6, True)]
    assert "division by zero" in results[3]["error"]
    assert "unexpected '$'" in results[4]["error"]
    # Every stage ended on its own after the stop message, and no mail was left behind.
    for stage in ("parser", "reasoner", "verifier"):
        assert client.list_agents(name=stage)[0]["status"] == "exited"


# The supervisor is no admin, so the workers it starts are sandboxed (only an admin may
# start an unsandboxed agent), and may run degraded only because the supervisor may.
def test_supervisor_restarts_a_failing_worker_then_gives_up(kernel) -> None:
    client = kernel.client()
    client.spawn("supervisor", EXAMPLES / "supervisor_agent.py", sandboxed=False,
                 allow_degraded=True, capabilities=["spawn", "kill", "message"],
                 args=["--worker-script", str(PROBER), "--worker-args", "no-such-attempt",
                       "--max-restarts", "2", "--sandboxed"])
    ended = client.wait("supervisor", timeout=120)
    log = client.logs("supervisor")
    assert ended["exit_code"] == 1, log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    decisions = [line["decision"] for line in lines if "decision" in line]
    assert decisions == ["restarted", "restarted", "giving up"], log
    failures = [line for line in lines if line.get("event") == "agent.exited"]
    assert len(failures) == 3 and all(f["status"] == "failed" for f in failures), log


def test_supervisor_is_done_when_the_worker_succeeds(kernel) -> None:
    client = kernel.client()
    client.spawn("supervisor", EXAMPLES / "supervisor_agent.py", sandboxed=False,
                 allow_degraded=True, capabilities=["spawn", "kill", "message"],
                 args=["--worker-script", str(PROBER), "--worker-args", "perms", "--sandboxed"])
    ended = client.wait("supervisor", timeout=120)
    log = client.logs("supervisor")
    assert ended["exit_code"] == 0, log
    assert '"decision": "done"' in log and "restarted" not in log


