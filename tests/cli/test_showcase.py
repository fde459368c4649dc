"""The main job: README's `agentos up agents/examples/showcase.yaml` as CI runs it (root, offline), with a
key, interrupted with Ctrl-C, and run by a normal user."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agentos.cgroups import TOP, detect, open_driver

SHOWCASE = Path(__file__).resolve().parents[2] / "agents" / "examples" / "showcase.yaml"
NAMES = ("reporter", "analyst", "producer", "flaky", "hog", "forkbomb", "netprobe")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the showcase's memory and pids limits are cgroups")
    if not {"memory", "pids"} <= open_driver(detect()).enforceable:
        pytest.skip("needs a host whose cgroups enforce memory and pids")


def up(tmp_path: Path, manifest: Path = SHOWCASE, **env: str) -> subprocess.Popen[str]:
    """`agentos up` on a private socket and state dir; no LLM key (offline) unless ``env`` gives one."""
    environ = {k: v for k, v in os.environ.items() if k not in (
        "AGENTOS_FD", "GEMINI_API_KEY", "GOOGLE_API_KEY", "AGENTOS_LLM_CONFIG", "AGENTOS_GEMINI_BASE_URL")}
    environ.update(AGENTOS_SOCKET=str(tmp_path / "kernel.sock"), AGENTOS_STATE_DIR=str(tmp_path / "state"),
                   NO_COLOR="1", **env)
    return subprocess.Popen([sys.executable, "-m", "agentos", "up", str(manifest)], env=environ, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[list[str], str]:
    """Wait for ``agentos up`` to end by itself: its stdout lines, and everything it printed."""
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return stdout.splitlines(), f"stdout:\n{stdout}\nstderr:\n{stderr}"


def said(out: list[str], name: str, pattern: str) -> list[str]:
    """The lines agent ``name`` printed (or had printed about it) that match ``pattern``."""
    return [line for line in out if re.match(rf"{name}\s* \| {pattern}", line)]


def assert_nothing_left(tmp_path: Path, out: list[str]) -> None:
    """No kernel, agent process, socket or cgroup of this run remains."""
    text = "\n".join(out)
    kernel_pid = int(re.search(r"started a kernel \(pid (\d+)\)", text).group(1))  # type: ignore[union-attr]
    agent_pids = [int(pid) for pid in re.findall(r"\| (?:started|restarted after \S+) \(pid (\d+)", text)]
    assert agent_pids, text
    for pid in [kernel_pid, *agent_pids]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (tmp_path / "kernel.sock").exists()
    left = [path for root in open_driver(detect()).roots for path in (root / TOP).glob(f"{kernel_pid}-*")]
    assert left == [], f"cgroups left behind: {left}"


def test_the_showcase_tells_the_whole_story_and_ends(tmp_path: Path) -> None:
    require_root()
    proc = up(tmp_path)
    out, story = finish(proc)
    assert "Traceback" not in story, story
    for name in NAMES:
        assert said(out, name, r"started \(pid \d+\)"), story
    # A pipeline passing work along, thinking offline and saying why.
    assert said(out, "analyst", "no GEMINI_API_KEY is set"), story
    assert said(out, "reporter", r"pipeline result: 5 of 5 documents summarised \(offline\)"), story
    assert said(out, "reporter", r"exited \(code 0\)"), story
    # An unstable agent, restarted by the kernel until it works.
    assert len(said(out, "flaky", r"restarted after")) == 2, story
    assert said(out, "flaky", "start 3: working now"), story
    assert said(out, "flaky", r"exited \(code 0\)"), story
    # A memory hog, OOM-killed at its limit while the others carry on.
    assert said(out, "hog", r"OOM-killed \(memory limit 64Mi\)"), story
    assert not said(out, "hog", "reached"), story
    # A fork bomb, stopped by the pids limit.
    assert said(out, "forkbomb", r"fork bomb contained: fork\(\) refused with EAGAIN"), story
    # No way out to the network.
    assert said(out, "netprobe", "network interfaces I can see: lo$"), story
    assert said(out, "netprobe", "network refused: no way out of the sandbox"), story
    assert not said(out, "netprobe", ".*CONNECTED"), story
    # It ends by itself once every agent is done: the OOM-killed hog is part of the story (the
    # manifest expects it), and README's first command succeeds.
    assert said(out, "hog", "DEGRADED") == [], story
    assert out[-1] == "every agent has ended; as expected: hog (oom_killed)", story
    assert proc.returncode == 0, story
    assert_nothing_left(tmp_path, out)


def test_ctrl_c_stops_the_showcase_and_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    proc = up(tmp_path)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            # Mid-story: the pipeline is running and the fork bomb holds its processes.
            if re.match(r"producer\s* \| started", line):
                break
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = seen + rest.splitlines()
    assert proc.returncode == 130, (out, stderr)
    assert "stopping the team" in out, out
    assert "Traceback" not in rest + stderr
    assert_nothing_left(tmp_path, out)


@pytest.fixture
def fake_gemini():
    """A fake Gemini API on 127.0.0.1 (it echoes prompts): its URL, stopped afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "agentos", "fake-gemini", "--port", "0", "--api-key", "k"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split(" on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait()


def test_with_a_key_the_analyst_thinks_with_gemini(tmp_path: Path, fake_gemini: str) -> None:
    require_root()
    # Only the pipeline: the rest of the showcase does not think.
    pipeline = tmp_path / "pipeline.yaml"
    showcase = SHOWCASE.read_text()
    pipeline.write_text(showcase[:showcase.index("  flaky:")].replace("script: showcase/",
                                                                       f"script: {SHOWCASE.parent}/showcase/"))
    out, story = finish(up(tmp_path, pipeline, GEMINI_API_KEY="k", AGENTOS_GEMINI_BASE_URL=fake_gemini))
    assert out[-1] == "every agent has ended", story
    assert not said(out, "analyst", "no GEMINI_API_KEY"), story
    assert said(out, "analyst", r"summarised 'Processes' by \S+"), story
    [result] = said(out, "reporter", "pipeline result: 5 of 5 documents summarised")
    assert "(by " in result and "offline" not in result, story
    # The fake echoes the prompt: the summary the reporter delivers came back from the model.
    assert said(out, "reporter", r"  - Processes: echo: Summarise this in one short sentence"), story
    assert_nothing_left(tmp_path, out)


def test_a_normal_user_runs_the_showcase_and_is_told_what_is_missing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: sets up an unprivileged uid to run the showcase as")
    from agentos.sandbox.probe import probe
    from tests.sandbox.test_rootless import NOBODY
    from tests.unprivileged import DEV_SITE, become

    if not probe().user_namespaces:
        pytest.skip(f"needs unprivileged user namespaces: {probe().notes.get('user')}")
    # pytest's tmp_path sits in a directory only root may enter.
    home = Path(tempfile.mkdtemp(prefix="agentos-showcase-"))
    os.chown(home, NOBODY, NOBODY)
    # env(1) puts the run's variables back after the switch to nobody, which keeps only a few.
    argv = ["/usr/bin/env", f"HOME={home}", f"AGENTOS_SOCKET={home}/kernel.sock",
            f"AGENTOS_STATE_DIR={home}/state", "NO_COLOR=1", sys.executable, "-m", "agentos", "up", str(SHOWCASE)]
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONPATH": DEV_SITE}
        proc = subprocess.Popen(argv, preexec_fn=lambda: become(NOBODY, NOBODY, argv, env),  # noqa: PLW1509
                                cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, story = finish(proc)
        assert_rootless_story(home, out, story)
    finally:
        shutil.rmtree(home)


def assert_rootless_story(home: Path, out: list[str], story: str) -> None:
    assert "Traceback" not in story, story
    # The sandbox holds without privileges (user namespaces): still no network.
    assert said(out, "netprobe", "network refused: no way out of the sandbox"), story
    assert said(out, "reporter", "pipeline result: 5 of 5 documents summarised"), story
    assert len(said(out, "flaky", r"restarted after")) == 2, story
    # Limits are cgroups, which an unprivileged user cannot create here: each agent says so.
    assert said(out, "hog", r"OOM-killed") or said(out, "hog", "reached 512 MiB .* no memory limit"), story
    assert (said(out, "forkbomb", "fork bomb contained")
            or said(out, "forkbomb", "forked 500 processes .* no pids limit")), story
    assert out[-1].startswith("every agent has ended"), story
    assert_nothing_left(home, out)
