"""``agentos ps``: one line per agent with its restarts, usage and LLM tokens, from a real kernel."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.cli.agents import PS_COLUMNS
from agentos.cli.main import main
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

PLAIN = ["--no-sandbox", "--memory", "unlimited", "--cpu", "unlimited", "--pids", "unlimited"]
CRASH_TWICE = """\
import sys
counter = sys.argv[1]
with open(counter, "a+") as f:
    f.seek(0)
    starts = len(f.read()) + 1
    f.write("x")
print(f"start {starts}", flush=True)
sys.exit(1 if starts <= 2 else 0)
"""
THINK_ONCE = """\
import time
import agentos
with agentos.Client() as kernel:
    print(kernel.think("hello there").content, flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelProcess]:
    """A kernel whose LLM gateway talks to a fake Gemini server."""
    with FakeGemini().running_in_thread() as gemini:
        k = KernelProcess(tmp_path / "k", env={"GEMINI_API_KEY": gemini.api_key, "GOOGLE_API_KEY": "",
                                               "AGENTOS_GEMINI_BASE_URL": gemini.url,
                                               "AGENTOS_GEMINI_MODEL": "gemini-test",
                                               "AGENTOS_LLM_CONFIG": json.dumps({"prices": {
                                                   "gemini-test": {"input": 1000, "output": 2000}}})}).start()
        try:
            yield k
        finally:
            assert k.stop() == 0, k.log()
    assert not k.socket_path.exists()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def rows(table: str) -> list[dict[str, str]]:
    header, *lines = table.splitlines()
    assert header.split() == list(PS_COLUMNS)
    # Only STATUS may hold a space ("exited (0)"): split around it from both ends.
    parsed = []
    for line in lines:
        words = line.split()
        head, tail = words[:3], words[-6:]
        parsed.append(dict(zip(PS_COLUMNS, [*head, " ".join(words[3:-6]), *tail])))
    return parsed


def eventually(check, what: str, timeout: float = 60.0):
    """Poll ``check()`` until it is truthy; a bound against hanging, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)
    return result


def test_ps_shows_restarts_usage_and_tokens(kernel: KernelProcess, tmp_path: Path, capsys) -> None:
    socket = ["--socket", str(kernel.socket_path)]
    (tmp_path / "crash_twice.py").write_text(CRASH_TWICE)
    (tmp_path / "think_once.py").write_text(THINK_ONCE)
    assert cli(capsys, "spawn", *socket, *PLAIN, "--restart", "on-failure", "--name", "flaky",
               str(tmp_path / "crash_twice.py"), str(tmp_path / "starts"))[0] == 0
    assert cli(capsys, "spawn", *socket, *PLAIN, "--name", "thinker", str(tmp_path / "think_once.py"))[0] == 0
    client = kernel.client()
    eventually(lambda: any(a["status"] == "exited" for a in client.list_agents(name="flaky")), "flaky's 3rd start")
    eventually(lambda: "echo: hello there" in client.logs("thinker"), "thinker's answer")

    code, out, err = cli(capsys, "ps", *socket)
    assert (code, err) == (0, "")
    by_name = {row["NAME"]: row for row in rows(out)}
    assert list(by_name) == ["thinker", "flaky"]  # running first
    thinker, flaky = by_name["thinker"], by_name["flaky"]
    [info] = client.list_agents(name="thinker")
    assert (thinker["ID"], thinker["PID"], thinker["STATUS"]) == (info["id"], str(info["pid"]), "running")
    assert thinker["UPTIME"].endswith("s") and thinker["MEMORY"] != "-" and thinker["CPU"].endswith("s")
    assert int(thinker["TOKENS"]) > 0 and thinker["RESTARTS"] == "0"
    assert float(thinker["USD"].removeprefix("$")) > 0  # priced by llm.prices
    assert (flaky["STATUS"], flaky["RESTARTS"], flaky["UPTIME"], flaky["TOKENS"], flaky["USD"]) == \
        ("exited (0)", "2", "-", "-", "-")

    code, out, _ = cli(capsys, "ps", "-a", *socket)
    history = [(row["STATUS"], row["RESTARTS"]) for row in rows(out) if row["NAME"] == "flaky"]
    assert history == [("failed (1)", "0"), ("failed (1)", "1"), ("exited (0)", "2")]

    code, out, _ = cli(capsys, "ps", "--running", *socket)
    assert [row["NAME"] for row in rows(out)] == ["thinker"]

    code, out, _ = cli(capsys, "ps", "--json", *socket)
    records = json.loads(out)
    assert [r["name"] for r in records] == ["thinker", "flaky"]
    assert records[0]["tokens"] == int(thinker["TOKENS"]) and records[1]["restarts"] == 2
    assert f"${records[0]['usd']:.4f}" == thinker["USD"] and records[1]["usd"] == 0


def test_ps_without_a_kernel_is_one_line_on_stderr(tmp_path: Path, capsys) -> None:
    code, out, err = cli(capsys, "ps", "--socket", str(tmp_path / "none.sock"))
    assert (code, out) == (1, "")
    assert err.startswith(f"agentos ps: error: no agentos kernel at {tmp_path}/none.sock") and err.count("\n") == 1
