"""The Prometheus endpoint of a real kernel, scraped and parsed by prometheus_client's text parser:
the values match what was done. Both twins (the compiled reactor and its pure-Python one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentos import Client
from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess
from tests.permissions.identities import LAUNCHER as CONFIGURED_KERNEL

from .conftest import agent, llm_env

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(telemetry: dict[str, str], url: str | None = None) -> Samples:
    """Scrape as Prometheus would, with the bearer token from the kernel's token file."""
    token = Path(telemetry["metrics_token_file"]).read_text().strip()
    request = urllib.request.Request(url or telemetry["metrics"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _ended(client: Client, agent_id: str) -> None:
    client.wait(id=agent_id, timeout=60)


@pytest.mark.parametrize("twin", ["compiled", "python"])
def test_scraped_values_match_what_was_done(tmp_path: Path, fake: FakeGemini, twin: str) -> None:
    env = {**llm_env(fake), "AGENTOS_NO_EXTENSIONS": "1" if twin == "python" else "0"}
    kernel = KernelProcess(tmp_path / "k", env=env, args=["--metrics", "127.0.0.1:0"]).start()
    try:
        with kernel.client(timeout=60) as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            url = telemetry["metrics"]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
            before = scrape(telemetry)
            for n in range(3):
                _ended(client, client.spawn(f"quick-{n}", command=["true"])["id"])
            denied = client.spawn("denied", agent("denied"))
            _ended(client, denied["id"])
            assert "denied" in client.logs(id=denied["id"])
            answers = [client.think(f"question {n}") for n in range(2)]
            client.noop_batch([b"x"] * 100)
            after = scrape(telemetry)
    finally:
        kernel.stop_checked()

    assert value(after, "agentos_spawn_duration_seconds_count") == 4  # 3 quick ones and "denied"
    assert value(after, "agentos_syscalls_total", op="SPAWN", outcome="ok") == 4
    assert value(after, "agentos_syscalls_total", op="SPAWN", outcome="permission_denied") == 1
    assert value(after, "agentos_denials_total", capability="spawn", op="SPAWN") == 1
    assert value(after, "agentos_agents", status="exited") == 4
    assert value(after, "agentos_agents", status="running") == 0
    assert value(after, "agentos_spawn_step_duration_seconds_count", step="sandbox") == 4

    who = f"uid:{os.getuid()}"
    model = {"model": "gemini-test", "agent": who}
    assert value(after, "agentos_think_calls_total", outcome="ok", **model) == 2
    assert value(after, "agentos_think_duration_seconds_count", **model) == 2
    assert value(after, "agentos_think_tokens_total", type="input", **model) == sum(
        a.tokens["prompt"] for a in answers)
    assert value(after, "agentos_think_tokens_total", type="output", **model) == sum(
        a.tokens["output"] for a in answers)
    assert value(after, "agentos_llm_queue_depth") == 0 and value(after, "agentos_llm_in_flight") == 0

    # NOOPs never reach Python: no counter of them, and the loop's iterations only grow.
    assert not [key for key in after if dict(key[1]).get("op") == "NOOP"]
    assert value(after, "agentos_kernel_loop_iterations_total") > value(
        before, "agentos_kernel_loop_iterations_total")
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0


def test_mailbox_depth_is_what_waits(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k", args=["--metrics", "localhost:0"]).start()
    try:
        with kernel.client(timeout=60) as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            sleeper = client.spawn("inbox", command=["sleep", "60"])
            for n in range(3):
                client.send("inbox", {"n": n})
            samples = scrape(telemetry)
            client.kill(id=sleeper["id"], grace=0)
    finally:
        kernel.stop_checked()
    depths = {dict(labels)["mailbox"]: v for (name, labels), v in samples.items()
              if name == "agentos_mailbox_depth"}
    assert list(depths.values()) == [3], depths


@pytest.mark.parametrize("address", ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"])
def test_a_non_loopback_address_is_refused_without_the_flag(tmp_path: Path, address: str) -> None:
    result = subprocess.run([sys.executable, "-m", "agentos", "kernel", "--socket", str(tmp_path / "s"),
                             "--state-dir", str(tmp_path / "state"), "--metrics", address],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "telemetry.metrics" in result.stderr and "--metrics-remote" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("address", ["9464", "127.0.0.1:http", "example.com:9464", "127.0.0.1:70000"])
def test_a_malformed_address_is_refused(tmp_path: Path, address: str) -> None:
    result = subprocess.run([sys.executable, "-m", "agentos", "kernel", "--socket", str(tmp_path / "s"),
                             "--state-dir", str(tmp_path / "state"), "--metrics", address],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "telemetry.metrics" in result.stderr, result.stderr


def test_remote_when_asked(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path / "k", args=["--metrics", "0.0.0.0:0", "--metrics-remote"]).start()
    try:
        with kernel.client() as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
        url = telemetry["metrics"]
        assert url.startswith("http://0.0.0.0:")
        samples = scrape(telemetry, url.replace("0.0.0.0", "127.0.0.1"))
        assert value(samples, "agentos_syscalls_total", op="HELLO", outcome="ok") >= 1
    finally:
        kernel.stop_checked()


def _status(url: str, authorization: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _read_as_nobody(path: Path) -> str:
    """What uid 65534 gets reading ``path``: its text, or the error's name."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                answer = path.read_text()
            except OSError as exc:
                answer = type(exc).__name__
            os.write(write_end, answer.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def test_a_scrape_needs_the_token_only_the_kernels_uid_can_read(tmp_path: Path) -> None:
    """Another local user reaches the loopback port, but not the metrics: every uid's agent
    names, projects, models and budgets are more than LIST or USAGE show it."""
    tokens = []
    for _ in range(2):  # the token outlives a restart, so a configured Prometheus goes on scraping
        kernel = KernelProcess(tmp_path / "k", args=["--metrics", "127.0.0.1:0"]).start()
        try:
            with kernel.client() as client:
                telemetry = client.hello()["capabilities"]["telemetry"]
            url, token_file = telemetry["metrics"], Path(telemetry["metrics_token_file"])
            token = token_file.read_text().strip()
            tokens.append(token)
            assert token_file.stat().st_mode & 0o777 == 0o600
            assert _read_as_nobody(token_file) == "PermissionError"
            assert _status(url, None) == 401
            assert _status(url, "Bearer " + "x" * len(token)) == 401
            assert _status(url, f"Basic {token}") == 401
            assert _status(url, f"Bearer {token}") == 200
        finally:
            kernel.stop_checked()
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 32


def test_ended_agents_series_go_after_the_grace(tmp_path: Path, fake: FakeGemini) -> None:
    """Per-agent series follow the agents alive: N agents that THINK, then end, leave none of
    theirs behind (grace 0 here; 300 s by default), while an agent that runs keeps its own."""
    config = tmp_path / "sections.json"
    config.write_text(json.dumps({"telemetry": {"metrics": "127.0.0.1:0", "series_grace": 0}}))
    kernel = KernelProcess(tmp_path / "k", env=llm_env(fake),
                           command=[sys.executable, str(CONFIGURED_KERNEL), str(config)]).start()
    try:
        with kernel.client(timeout=60) as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            keeper = _ready(client, client.spawn("keeper", agent("thinker"), capabilities=["think"]))
            for round_ in range(3):
                thinkers = [_ready(client, client.spawn(f"t{round_}-{n}", agent("thinker"), capabilities=["think"]))
                            for n in range(4)]
                during = _agent_labels(scrape(telemetry))
                assert {f"t{round_}-{n}" for n in range(4)} | {"keeper"} <= during, during
                for thinker in thinkers:
                    client.kill(id=thinker["id"], grace=0)
                    client.wait(id=thinker["id"], timeout=60)
                assert _poll(lambda: _agent_labels(scrape(telemetry)) == {"keeper"}), \
                    _agent_labels(scrape(telemetry))
            client.kill(id=keeper["id"], grace=0)
    finally:
        kernel.stop_checked()


def _ready(client: Client, spawned: dict[str, Any]) -> dict[str, Any]:
    assert _poll(lambda: any(a["id"] == spawned["id"] and a["ready"] for a in client.list_agents())), \
        client.logs(id=spawned["id"])
    return spawned


def _agent_labels(samples: Samples) -> set[str]:
    return {dict(labels)["agent"] for (_, labels) in samples if "agent" in dict(labels)}


def _poll(condition: Any, timeout: float = 30.0) -> bool:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True
