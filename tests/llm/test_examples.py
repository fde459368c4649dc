"""The LLM examples in agents/examples run against a kernel and the fake Gemini."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "agents" / "examples"


def _run(kernel, script: str, *args: str, stdin: str = "") -> str:
    env = {**os.environ, "AGENTOS_SOCKET": str(kernel.process.socket_path)}
    env.pop("AGENTOS_FD", None)
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_thinking_agent_streams_and_continues_its_context(llm_kernel) -> None:
    first = _run(llm_kernel, "thinking_agent.py", stdin="Hello there\n/usage\n/quit\n")
    assert "model> echo: Hello there" in first and "(calls 1," in first
    second = _run(llm_kernel, "thinking_agent.py", stdin="Again\n")
    assert "continuing context 'thinking-agent': 2 turns so far" in second
    # The second question reached the model with the first exchange before it.
    texts = [t["parts"][0]["text"] for t in llm_kernel.fake.requests[-1].body["contents"]]
    assert texts == ["Hello there", "echo: Hello there", "Again"]


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"max_inflight": 1}))
def test_llm_contention_demo_reports_every_agent(llm_kernel) -> None:
    llm_kernel.fake.delay = 0.01
    out = _run(llm_kernel, "llm_contention.py", "--agents", "2", "--calls", "2", "--greedy", "8")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"greedy", "polite-0", "polite-1"}, out
    assert rows["greedy"][1] == "8" and rows["polite-0"][1] == "2" and rows["polite-1"][1] == "2"
    assert all(int(row[4]) > 0 for row in rows.values()), "tokens per agent come from USAGE"
