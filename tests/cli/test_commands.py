"""``agentos spawn, logs, kill, top, think, doctor`` against a real kernel, run as the CLI runs them."""
from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.cli.main import main
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

PLAIN = ["--no-sandbox", "--memory", "unlimited", "--cpu", "unlimited", "--pids", "unlimited"]


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "count.py").write_text("import sys\nfor i in range(int(sys.argv[1])):\n    print(f'line {i}')\n")
    (tmp_path / "serve.py").write_text(textwrap.dedent("""\
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("serving", flush=True)
        while True:
            time.sleep(1)
        """))
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_spawn_logs_kill(kernel, scripts: Path, capsys) -> None:
    socket = ["--socket", str(kernel.socket_path)]
    code, out, _ = cli(capsys, "spawn", *socket, *PLAIN, "--name", "talk", str(scripts / "count.py"), "3")
    assert code == 0 and out.startswith("talk started: id ")
    talk_id = out.split("id ", 1)[1].split(",", 1)[0]
    client = kernel.client()
    assert client.wait(id=talk_id, timeout=60)["status"] == "exited"
    assert cli(capsys, "logs", *socket, "talk") == (0, "line 0\nline 1\nline 2\n", "")
    assert cli(capsys, "logs", *socket, "--tail", "7", "talk") == (0, "line 2\n", "")
    assert cli(capsys, "logs", *socket, "-f", "--id", talk_id) == (0, "line 0\nline 1\nline 2\n", "")

    code, out, _ = cli(capsys, "spawn", *socket, *PLAIN, str(scripts / "serve.py"))
    assert code == 0 and out.startswith("serve started: ")
    code, out, _ = cli(capsys, "kill", *socket, "--grace", "5s", "serve")
    assert code == 0 and out.startswith("serve (") and out.endswith(") stopped: killed\n")
    code, out, _ = cli(capsys, "kill", *socket, "serve")
    assert code == 0 and out.endswith(") was not running: killed\n")
    code, out, err = cli(capsys, "kill", *socket, "ghost")
    assert (code, out) == (1, "") and err == "agentos kill: error: no agent named 'ghost'\n"


def test_spawn_a_program(kernel, capsys) -> None:
    socket = ["--socket", str(kernel.socket_path)]
    code, out, _ = cli(capsys, "spawn", *socket, *PLAIN, "--command", "--name", "greet", "--env", "WHO=there",
                       "sh", "-c", "echo hi $WHO")
    assert code == 0, out
    kernel.client().wait("greet", timeout=60)
    assert cli(capsys, "logs", *socket, "greet") == (0, "hi there\n", "")


def test_spawn_refuses_bad_options_in_one_line(kernel, scripts: Path, capsys) -> None:
    socket = ["--socket", str(kernel.socket_path)]
    code, out, err = cli(capsys, "spawn", *socket, "--memory", "12XB", str(scripts / "serve.py"))
    assert (code, out) == (2, "")
    assert err == ("agentos spawn: error: --memory: '12XB' is not a size (examples: 512Mi, 1Gi, 1048576)\n")
    code, out, err = cli(capsys, "spawn", *socket, *PLAIN, "--permissions", "think,telepathy",
                         str(scripts / "serve.py"))
    assert (code, out) == (1, "") and err.startswith("agentos spawn: error: unknown capability 'telepathy'")
    assert kernel.client().list_agents() == []


def test_spawn_defaults_are_the_secure_ones(kernel, scripts: Path, capsys) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a sandbox with cgroup limits")
    code, out, _ = cli(capsys, "spawn", "--socket", str(kernel.socket_path), str(scripts / "serve.py"))
    assert code == 0, out
    [info] = kernel.client().list_agents(name="serve")
    assert info["sandboxed"] is True
    assert info["limits"] == {"memory": 512 * 2**20, "pids": 128, "cpu": 1.0}
    kernel.client().kill("serve", grace=5)


def test_top_once(kernel, scripts: Path, capsys) -> None:
    socket = ["--socket", str(kernel.socket_path)]
    assert cli(capsys, "spawn", *socket, *PLAIN, str(scripts / "serve.py"))[0] == 0
    code, out, _ = cli(capsys, "top", *socket, "-n", "1")
    assert code == 0
    header, columns, row = out.splitlines()
    assert header.startswith("agentos ") and header.endswith(": 1 agent(s) running")
    assert columns.split() == ["NAME", "ID", "PID", "STATUS", "UPTIME", "RESTARTS", "MEMORY", "CPU", "TOKENS", "USD"]
    assert row.split()[0] == "serve" and row.split()[3] == "running"
    # The first refresh already has a CPU figure: the average since the agent started.
    assert re.fullmatch(r"\d+%", row.split()[7]), row
    kernel.client().kill("serve", grace=5)


@pytest.fixture
def keyless_kernel(tmp_path: Path) -> Iterator[KernelProcess]:
    """A kernel that holds no LLM key, whatever the environment of the tests holds."""
    with KernelProcess(tmp_path / "k", env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "", "OPENAI_API_KEY": ""}) as k:
        yield k


def test_doctor_reports_the_host_and_the_kernel(keyless_kernel: KernelProcess, capsys) -> None:
    kernel = keyless_kernel
    code, out, _ = cli(capsys, "doctor", "--socket", str(kernel.socket_path))
    checks = {line.split(":", 1)[0].split(None, 1)[1]: line.split(None, 1)[0] for line in out.splitlines()}
    assert set(checks) >= {"python", "compiled modules", "cgroups", "namespaces", "seccomp", "landlock", "kernel",
                           "LLM key"}
    assert checks["python"] == checks["kernel"] == "ok"
    assert code == (1 if "FAIL" in checks.values() else 0)
    # The same findings for scripts, and the kernel's own answers: its cgroups, its key, its uid.
    code, out, _ = cli(capsys, "doctor", "--json", "--socket", str(kernel.socket_path))
    report = json.loads(out)
    assert report["ok"] == (code == 0) and report["uid"] == os.geteuid()
    by_check = {check["check"]: check for check in report["checks"]}
    hello = kernel.client().hello()["capabilities"]
    cgroups = by_check["cgroups"]
    assert cgroups["enforced"] == hello["processes"]["cgroups"]["enforceable"]
    assert kernel.proc is not None and cgroups["detail"].startswith(f"the running kernel (pid {kernel.pid})")
    # The test kernel holds no LLM key, whatever this shell's environment says.
    assert by_check["LLM key"]["level"] == "warn"
    assert by_check["LLM key"]["detail"].startswith("the running kernel has no key for gemini")
    # A root kernel: unsandboxed agents would run as root, and doctor says so.
    assert (by_check.get("root", {}).get("level") == "warn") == (os.geteuid() == 0)


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini().running_in_thread() as fake:
        yield fake


@pytest.fixture
def llm_kernel(tmp_path: Path, gemini: FakeGemini) -> Iterator[KernelProcess]:
    env = {"AGENTOS_GEMINI_BASE_URL": gemini.url, "GEMINI_API_KEY": gemini.api_key, "GOOGLE_API_KEY": "",
           "AGENTOS_GEMINI_MODEL": "gemini-test"}
    kernel = KernelProcess(tmp_path / "k", env=env).start()
    try:
        yield kernel
    finally:
        assert kernel.stop() == 0, kernel.log()


def test_think(llm_kernel: KernelProcess, capsys) -> None:
    socket = ["--socket", str(llm_kernel.socket_path)]
    assert cli(capsys, "think", *socket, "hello there") == (0, "echo: hello there\n", "")
    assert cli(capsys, "think", *socket, "--no-stream", "again") == (0, "echo: again\n", "")


def test_think_without_a_key_is_one_clear_line(tmp_path: Path, capsys) -> None:
    kernel = KernelProcess(tmp_path / "k", env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}).start()
    try:
        code, out, err = cli(capsys, "think", "--socket", str(kernel.socket_path), "hello")
    finally:
        assert kernel.stop() == 0
    assert (code, out) == (1, "")
    assert err.startswith("agentos think: error: not_configured: ") and "GEMINI_API_KEY" in err and err.count("\n") == 1


def test_a_manifest_agents_llm_section_reaches_the_model(llm_kernel: KernelProcess, gemini: FakeGemini,
                                                         tmp_path: Path, capsys) -> None:
    (tmp_path / "asker.py").write_text("import agentos\n"
                                       "with agentos.Client() as kernel:\n"
                                       "    print(kernel.think('hi').content, flush=True)\n")
    (tmp_path / "team.yaml").write_text(textwrap.dedent("""\
        agents:
          asker:
            script: asker.py
            sandbox: {enabled: false}
            limits: {memory: unlimited, cpu: unlimited, pids: unlimited, llm_tokens: 1000}
            llm: {system: Answer briefly., temperature: 0.3}
        """))
    code, out, _ = cli(capsys, "up", "--socket", str(llm_kernel.socket_path), str(tmp_path / "team.yaml"))
    assert code == 0, out
    assert "asker | echo: hi" in out.splitlines()
    [request] = [r for r in gemini.requests if r.path.endswith(":generateContent")]
    assert request.body["systemInstruction"]["parts"] == [{"text": "Answer briefly."}]
    assert request.body["generationConfig"]["temperature"] == 0.3
