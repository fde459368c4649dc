"""Shared pieces of the sandbox tests: one launcher per module, agents run to completion, leak checks."""
from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentos.sandbox import Launcher, SandboxSpec
from agentos.sandbox._linux import linux

AGENTS = Path(__file__).parent / "agents"
ADVERSARIAL = Path(__file__).parents[2] / "agents" / "examples" / "adversarial"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def agent(name: str) -> str:
    """Path of a test agent script."""
    return str(AGENTS / f"{name}.py")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def require(launcher: Launcher, *features: str) -> None:
    """Skip (a failure in CI) unless this host supports every feature named."""
    support = launcher.support
    for feature in features:
        ok = support.landlock_abi if feature == "landlock" else (
            support.seccomp if feature == "seccomp" else support.namespaces.get(feature))
        if not ok:
            pytest.skip(f"needs {feature} support: {support.notes.get(feature, 'unavailable on this host')}")


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    with Launcher() as started:
        yield started


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every agent a test starts is reaped, and the host's mount table is untouched.

    The module's launcher may keep one child forked ahead of time for the next agent.
    """
    children, mounts = _children(), _mounts()
    yield
    if "launcher" in request.fixturenames:
        children |= set(request.getfixturevalue("launcher").embryo_pids)
    assert _children() <= children, "a test left a child process (or an unreaped zombie) behind"
    assert _mounts() == mounts, "a test changed the host's mounts"


@dataclass
class Result:
    """An agent that ran to completion."""

    returncode: int
    stdout: str
    stderr: str
    isolation: dict[str, Any]

    def json(self) -> Any:
        """The agent's stdout as JSON (the inspection agents print one object)."""
        assert self.returncode == 0, f"agent failed ({self.returncode}):\n{self.stderr}"
        return json.loads(self.stdout)


def run_agent(launcher: Launcher, tmp_path: Path, *, script: str | None = None, argv: list[str] | None = None,
              via: str = "zygote", **spec: Any) -> Result:
    """Run one agent to completion; ``via`` "exec" runs ``script`` in a fresh interpreter."""
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        if script is not None and via == "exec":
            spec["readonly_paths"] = [*spec.get("readonly_paths", []), os.path.dirname(script)]
            argv, script = [sys.executable, script, *(argv or [])], None
        elif script is not None:
            argv = ["agent", *(argv or [])]
        assert argv is not None
        spec.setdefault("env", dict(ENV))
        launched = launcher.launch(SandboxSpec(argv=argv, python_script=script, stdout_fd=stdout.fileno(),
                                               stderr_fd=stderr.fileno(), **spec))
    try:
        code = launched.wait()
    finally:
        launched.close()
    return Result(code, out.read_text(), err.read_text(), launched.isolation)


def in_child(fn: Callable[[], Any], flags: int = 0) -> Any:
    """Run ``fn`` in a child born in ``flags``' namespaces; its return value, or re-raise its exception."""
    r, w = os.pipe()
    pid, pidfd = linux.clone3(flags)
    if pid == 0:
        os.close(r)
        try:
            try:
                outcome: tuple[str, Any] = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - carried to the parent as the test's failure
                outcome = ("raised", exc)
            os.write(w, pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    finally:
        os.close(pidfd)
    kind, value = pickle.loads(data)
    if kind == "raised":
        raise value
    return value
