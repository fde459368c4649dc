"""The pytest plugin agent authors get (agentos.testing.pytest_plugin): their test files, run by
pytest in a subprocess as they would run them, against a real kernel and the fake Gemini."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes.conftest import pid_alive

# Loaded by name, as the installed entry point would load it; `no:agentos` keeps an installed
# one (a regular install, CI) from registering the same module twice.
PLUGIN = ("-p", "no:agentos", "-p", "agentos.testing.pytest_plugin")
DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"

def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN, "-v", timeout=90)


def test_the_documented_example_passes(pytester: pytest.Pytester) -> None:
    """docs/testing.md's agent and its test (the blocks that start ``# NAME.py``), as written."""
    blocks = re.findall(r"```python\n# (\w+)\.py\n(.*?)```", DOC.read_text(), re.S)
    assert [name for name, _ in blocks] == ["summariser", "test_summariser"]
    pytester.makepyfile(**dict(blocks))
    run(pytester).assert_outcomes(passed=1)


def test_code_under_test_finds_the_kernel_and_the_marker_configures_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_agent="""
        import agentos
        import pytest
        from agentos.testing import KernelProcess

        def test_code_under_test_finds_the_kernel_by_itself(kernel):
            assert isinstance(kernel, KernelProcess)
            with agentos.Client() as client:
                assert client.hello()["pid"] == kernel.pid

        @pytest.mark.agentos_kernel(env={"AGENTOS_GEMINI_MODEL": "gemini-marked"})
        def test_the_marker_configures_the_kernel(kernel, fake_gemini):
            with kernel.client() as client:
                assert client.think("hello").content == "echo: hello"
            [request] = fake_gemini.requests
            assert request.path.endswith("/models/gemini-marked:generateContent")
    """)
    run(pytester).assert_outcomes(passed=2)


def test_a_failed_test_leaves_nothing_behind_and_reports_the_logs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(agent="""
        import time

        print("agent was here", flush=True)
        time.sleep(600)
    """)
    pytester.makepyfile(test_agent="""
        import json
        import time
        from pathlib import Path

        HERE = Path(__file__).parent

        def test_fails_while_an_agent_runs(kernel):
            with kernel.client() as client:
                agent = client.spawn(name="lingerer", script=str(HERE / "agent.py"))
                while "agent was here" not in client.logs("lingerer"):
                    time.sleep(0.05)
            (HERE / "left.json").write_text(json.dumps({
                "pids": [kernel.pid, kernel.proc.pid, agent["pid"]], "root": str(kernel.root)}))
            assert False, "the agent is wrong"
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured agentos kernel log call*",
                                 "*Captured agentos agent log lingerer-*.log call*", "agent was here"])
    left = json.loads((pytester.path / "left.json").read_text())
    assert not Path(left["root"]).exists(), "the kernel's directory (socket, state) was left behind"
    give_up = time.monotonic() + 30
    while alive := [pid for pid in left["pids"] if pid_alive(pid)]:
        assert time.monotonic() < give_up, f"still running after the test: {alive}"
        time.sleep(0.05)


def test_importing_agentos_testing_does_not_import_pytest() -> None:
    """Agents and tools may use the fakes and KernelProcess without pytest installed."""
    probe = "import sys, agentos.testing; print(sorted(m for m in sys.modules if 'pytest' in m))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
