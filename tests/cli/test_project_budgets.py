"""Two projects each run an agent named ``thinker`` with different LLM budgets from their
manifests' ``limits``, on one kernel (started by the first ``up``). Each keeps its own budget
and its own account: one team exhausting its tokens neither limits nor charges the other."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from agentos import Client
from agentos.testing import FakeGemini
from tests.cli.test_up import lines

#: Thinks until its budget says no (at most ``CALLS`` times), prints what each call got, ends.
THINKER = """\
    import json
    import agentos
    got = []
    with agentos.Client() as kernel:
        while len(got) < {calls} and "budget_exhausted" not in got:
            answer = kernel.think("hello " * 30, max_output_tokens=16)
            got.append(answer.error["type"] if answer.error else "ok")
    print(json.dumps(got), flush=True)
    """
CALLS = 40


def team(directory: Path, project: str, limits: str) -> Path:
    directory.mkdir()
    (directory / "thinker.py").write_text(textwrap.dedent(THINKER.format(calls=CALLS)))
    path = directory / "team.yaml"
    path.write_text(f"name: {project}\nkernel: {{socket: ../run/k.sock, state_dir: ../run/state}}\n"
                    "agents:\n  thinker:\n    script: thinker.py\n    sandbox: {enabled: false}\n"
                    f"    limits: {{memory: unlimited, cpu: unlimited, pids: unlimited, {limits}}}\n")
    return path


def agentos(fake: FakeGemini, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI, with the kernel it starts pointed at ``fake``."""
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTOS_SOCKET", "AGENTOS_FD")}
    env.update({"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
                "AGENTOS_GEMINI_MODEL": "gemini-test", "GOOGLE_API_KEY": ""})
    return subprocess.run([sys.executable, "-m", "agentos", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def outcome(client: Client, name: str) -> list[str]:
    assert client.wait(name, timeout=60)["exit_code"] == 0, client.logs(name)
    result: list[str] = json.loads(lines(client.logs(name))[-1])
    return result


def test_two_projects_agents_of_one_name_keep_their_own_llm_budgets(tmp_path: Path) -> None:
    # alpha's budget allows a few calls; beta's has no token budget, only a call rate.
    alpha = team(tmp_path / "alpha", "alpha", "llm_tokens: 200")
    beta = team(tmp_path / "beta", "beta", "llm_calls_per_minute: 1000")
    socket = tmp_path / "run" / "k.sock"
    with FakeGemini().running_in_thread() as fake:
        try:
            up = agentos(fake, "up", "-d", str(alpha), cwd=tmp_path)
            assert up.returncode == 0, up
            with Client(socket) as client:
                spent_alpha = outcome(client, "alpha/thinker")
                assert agentos(fake, "up", "-d", str(beta), cwd=tmp_path).returncode == 0
                spent_beta = outcome(client, "beta/thinker")
                usage: dict[str, Any] = client.usage()
        finally:
            for manifest in (beta, alpha):
                agentos(fake, "down", str(manifest), cwd=tmp_path)
    assert spent_alpha[-1] == "budget_exhausted" and spent_alpha[0] == "ok", spent_alpha
    assert spent_beta == ["ok"] * CALLS, "alpha's budget and spending are not beta's"

    reports = {report["team"]: report for key, report in usage["agents"].items() if key.startswith("agent:")}
    assert sorted(reports) == ["name:alpha/thinker", "name:beta/thinker"]
    assert reports["name:alpha/thinker"]["budget"]["tokens"] == 200
    beta_report = reports["name:beta/thinker"]
    assert (beta_report["budget"]["tokens"], beta_report["budget"]["calls_per_minute"]) == (None, 1000)
    assert beta_report["calls"] == CALLS
    assert usage["teams"]["name:beta/thinker"]["tokens"] == beta_report["tokens"]["total"]
