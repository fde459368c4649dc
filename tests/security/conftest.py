"""The adversarial suite's fixtures: every attack runs against a kernel run as root and one run
as a throwaway unprivileged user, and some attacks come from another throwaway local user.

The users are created for the session (``useradd``) and removed at its end (``userdel -r``),
failures included. The unprivileged kernel gets a cgroup subtree delegated to its user,
as systemd delegates one to a user session, so limits hold in both modes.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.cgroups import detect
from agentos.testing.kernel import KernelProcess
from tests.sandbox.conftest import in_child
from tests.unprivileged import wrapper

HERE = Path(__file__).parent
ADVERSARIAL = HERE.parents[1] / "agents" / "examples" / "adversarial"
MODES = ("root", "unprivileged")
#: The value the kernel holds as its LLM key: no agent may ever see it (scanned for by shape).
API_KEY = "AOSK-" + os.urandom(16).hex()
#: v1 hierarchies the kernel's cgroup driver uses.
_V1_USED = ("memory", "pids", "cpu", "cpuacct", "freezer")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "escape(reason, modes=MODES): an open hole of issue 9, fixed by someone else: "
                   "strict xfail in those kernel modes, so the fix turns it into a failure to remove")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("escape")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("kernel_mode") if callspec else None
        if mode in marker.kwargs.get("modes", MODES):
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"issue 9: {marker.args[0]}"))


# --- throwaway users ------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _userdel(name: str) -> None:
    subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


def _remove_stale_users() -> None:
    """Users of earlier sessions that died before their cleanup (their pid is in the name)."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith("aossec") and entry.pw_name[7:].isdigit():
            if not os.path.exists(f"/proc/{entry.pw_name[7:]}"):
                _userdel(entry.pw_name)


@contextmanager
def throwaway_user(role: str, home_parent: Path) -> Iterator[User]:
    name = f"aossec{role}{os.getpid()}"
    # This process makes it once: one that exists already is an earlier process's of the same
    # pid that died before its cleanup (its group too, or useradd --user-group fails).
    _userdel(name)
    subprocess.run(["groupdel", name], check=False, capture_output=True)
    subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                    str(home_parent / name), "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        _userdel(name)


def module_user(role: str, why: str) -> Iterator[User]:
    """A throwaway user for a test module's fixture (``yield from module_user(...)``): skipped
    (a failure under AGENTOS_REQUIRE_PRIVILEGED) without root; its home and itself removed."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
    _remove_stale_users()
    homes = Path(tempfile.mkdtemp(prefix=f"agentos-user-{role}-"))
    try:
        homes.chmod(0o755)
        with throwaway_user(role, homes) as made:
            yield made
    finally:
        shutil.rmtree(homes, ignore_errors=True)


@dataclass(frozen=True)
class Users:
    #: Runs the unprivileged kernel.
    kernel: User
    #: Another local user: an attacker with a login on the same host.
    attacker: User


@pytest.fixture(scope="session")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates throwaway users")
    _remove_stale_users()
    homes = tmp_path_factory.mktemp("homes")
    homes.chmod(0o755)
    with throwaway_user("k", homes) as kernel_user, throwaway_user("a", homes) as attacker:
        yield Users(kernel_user, attacker)


def as_user(user: User, fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, run in a child process that is ``user`` and nothing more."""
    def dropped() -> Any:
        os.setgroups([])
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        return fn()
    return in_child(dropped)


# --- agent scripts, readable by every uid ---------------------------------------------

@pytest.fixture(scope="session")
def scripts() -> Iterator[Path]:
    """The attack agents (and the adversarial examples) copied where every uid may read them."""
    directory = Path(tempfile.mkdtemp(prefix="agentos-sec-scripts-"))
    try:
        directory.chmod(0o755)
        for source in [*(HERE / "agents").glob("*.py"), *ADVERSARIAL.glob("*.py")]:
            shutil.copy(source, directory / source.name)
            (directory / source.name).chmod(0o644)
        yield directory
    finally:
        shutil.rmtree(directory)


# --- cgroups delegated to the kernel's user ---------------------------------------------

@contextmanager
def delegated_cgroups(user: User) -> Iterator[list[tuple[str, str]]]:
    """A cgroup directory per hierarchy owned by ``user``; yields (directory, hierarchy root)
    pairs to bind over the roots in the kernel's mount namespace, so it makes its tree there."""
    layout = detect()
    name = f"agentos-sec-{user.name}-{os.urandom(4).hex()}"
    if layout.driver_name() == "v2":
        assert layout.v2_mount is not None
        hierarchies = [layout.v2_mount]
    else:
        hierarchies = list(dict.fromkeys(layout.v1_mounts[c] for c in _V1_USED if c in layout.v1_mounts))
    made = []
    try:
        for root in hierarchies:
            directory = root / name
            directory.mkdir()
            made.append(directory)
            for path in [directory, *[directory / f for f in ("cgroup.procs", "cgroup.subtree_control",
                                                               "cgroup.threads", "tasks")]]:
                if path.exists():
                    os.chown(path, user.uid, user.gid)
        yield [(str(d), str(d.parent)) for d in made]
    finally:
        for directory in made:
            _remove_cgroup_tree(directory)


def _remove_cgroup_tree(top: Path) -> None:
    """Remove a cgroup subtree bottom-up, killing what a crashed kernel left running in it."""
    for _ in range(100):
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for directory in dirs:
            for pid in (directory / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                directory.rmdir()
            except OSError:
                pass
        if not top.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"cgroup {top} could not be removed")


# --- kernels ------------------------------------------------------------------------------

@dataclass
class HostileKernel:
    """A kernel under attack, and the means to aim agents at it."""

    mode: str
    process: KernelProcess
    scripts: Path
    admin: Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = self.process.client(timeout=120)

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.pid

    def script(self, name: str) -> str:
        return str(self.scripts / f"{name}.py")

    def spawn(self, script: str, *args: Any, **options: Any) -> dict[str, Any]:
        """Start ``script`` (a name in the scripts dir) as a sandboxed agent; JSON-encodes dict args."""
        argv = [json.dumps(a) if isinstance(a, (dict, list)) else str(a) for a in args]
        return self.admin.spawn(options.pop("name", script.replace("_", "-")), self.script(script),
                                args=argv, **options)

    def verdict(self, agent: dict[str, Any]) -> dict[str, Any]:
        """The agent's last JSON line, once it has ended."""
        ended = self.admin.wait(id=agent["id"], timeout=90)
        lines = [line for line in self.admin.logs(id=agent["id"]).splitlines() if line.startswith("{")]
        assert lines, f"agent {ended['name']} ({ended['status']}) reported nothing:\n" \
                      f"{self.admin.logs(id=agent['id'])}"
        result: dict[str, Any] = json.loads(lines[-1])
        result["_agent"] = ended
        return result

    def attack(self, script: str, *args: Any, **options: Any) -> dict[str, Any]:
        """Run an attacking agent to its end and return its verdict."""
        return self.verdict(self.spawn(script, *args, **options))

    def output(self, agent: dict[str, Any]) -> list[dict[str, Any]]:
        """Every JSON line the agent has printed so far."""
        text = self.admin.logs(id=agent["id"])
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def wait_output(self, agent: dict[str, Any], lines: int = 1, limit: float = 60.0) -> list[dict[str, Any]]:
        """Poll until the agent has printed ``lines`` JSON lines (the limit only bounds a broken run)."""
        deadline = time.monotonic() + limit
        while len(out := self.output(agent)) < lines:
            status = self.admin.list_agents(name=agent["name"])[0]["status"]
            assert status == "running", f"{agent['name']} ended ({status}) before reporting:\n" \
                                        f"{self.admin.logs(id=agent['id'])}"
            assert time.monotonic() < deadline, f"{agent['name']} reported nothing in {limit}s"
            time.sleep(0.05)
        return out

    def alive(self) -> bool:
        """The kernel process runs and still answers."""
        assert self.process.proc is not None
        if self.process.proc.poll() is not None:
            return False
        with Client(self.process.socket_path, timeout=30) as probe:
            return probe.noop(b"alive?") == b"alive?"


@contextmanager
def hostile_kernel_in(mode: str, users: Users, scripts: Path, *, root: Path | None = None,
                      allow_tracebacks: bool = False, api_key: str = API_KEY,
                      args: list[str] | None = None,
                      env: dict[str, str] | None = None) -> Iterator[HostileKernel]:
    """A kernel in ``mode`` holding ``api_key`` as its LLM key, its root dir (socket, state, log)
    reachable by every uid so that only the kernel's own modes protect it; stopped and checked
    at the end. An empty ``api_key`` keeps THINK off the network; ``env`` adds to the kernel's
    environment (a fake model's URL, an ``AGENTOS_LLM_CONFIG``)."""
    made = root is None
    root = Path(tempfile.mkdtemp(prefix="agentos-sec-kernel-")) if root is None else root
    owner = users.kernel if mode == "unprivileged" else User("root", 0, 0)
    try:
        home = root / "k"
        for directory in (root, home):
            directory.mkdir(exist_ok=True)
            directory.chmod(0o755)
            os.chown(directory, owner.uid, owner.gid)
        os.close(os.open(home / "kernel.log", os.O_CREAT | os.O_WRONLY, 0o600))
        with delegated_cgroups(owner) if mode == "unprivileged" else _no_binds() as binds:
            command = [sys.executable, "-m", "agentos", "kernel"]
            if mode == "unprivileged":
                command = [*wrapper(owner.uid, owner.gid, binds), *command]
            process = KernelProcess(home, command=command, args=args,
                                    env={"GEMINI_API_KEY": api_key, "GOOGLE_API_KEY": "", "OPENAI_API_KEY": "",
                                         **(env or {})})
            process.start()
            try:
                yield HostileKernel(mode, process, scripts)
            finally:
                process.stop_checked(allow_tracebacks=allow_tracebacks)
    finally:
        if made:
            shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _no_binds() -> Iterator[list[tuple[str, str]]]:
    yield []


@pytest.fixture(scope="session", params=MODES)
def kernel_mode(request: pytest.FixtureRequest) -> str:
    """``root``: the kernel runs as root. ``unprivileged``: as a throwaway user with no privilege."""
    return str(request.param)


@pytest.fixture(scope="module")
def hostile(kernel_mode: str, users: Users, scripts: Path) -> Iterator[HostileKernel]:
    """One kernel per mode and module, for attacks that leave it as they found it."""
    with hostile_kernel_in(kernel_mode, users, scripts) as kernel:
        yield kernel


@pytest.fixture
def fresh(kernel_mode: str, users: Users, scripts: Path) -> Iterator[HostileKernel]:
    """A kernel of this test's own, for attacks that may break it (tracebacks allowed in its log)."""
    with hostile_kernel_in(kernel_mode, users, scripts, allow_tracebacks=True) as kernel:
        yield kernel
