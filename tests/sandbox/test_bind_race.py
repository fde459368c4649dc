"""A path checked as real and swapped for a symlink before the child uses it leads nowhere.

The kernel checks a SPAWN's paths by their real path, then the child binds them (and the
zygote reads the script) a moment later. A spawner that may write on such a path can swap
a checked directory for a symlink in between. Here the swap is made deterministically,
right after the launcher planned the view and before the zygote forks the child: every
use of the path must then fail naming it, and bind nothing. The same swap made by an agent
against a running kernel is attacked in ``tests/security/test_bind_race.py``.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.sandbox import Launcher, SandboxError, SandboxSpec
from agentos.sandbox import launcher as launcher_module

from .conftest import ENV, agent, run_agent

SECRET = "the secret that no agent may read"


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A spawner's writable dir holding the checked dir, and a secret dir outside every view."""
    writable = tmp_path / "writable"
    checked = writable / "checked"
    checked.mkdir(parents=True)
    (checked / "mine.txt").write_text("mine")
    shutil.copy(agent("list_paths"), checked / "agent.py")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "secret.txt").write_text(SECRET)
    (secret / "agent.py").write_text(f"print({SECRET!r})\n")
    return {"writable": writable, "checked": checked, "secret": secret}


def swap(path: Path, target: Path) -> None:
    """What the attacker does: move the checked directory aside and put a symlink in its place."""
    path.rename(path.with_name(path.name + ".was"))
    path.symlink_to(target)


@pytest.fixture
def after_planning(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], None]], None]]:
    """``after_planning(action)``: run ``action`` once the next launch has planned its view,
    before the zygote forks the child: in the window between check and use."""
    actions: list[Callable[[], None]] = []
    make_plan = launcher_module.make_plan

    def planned(*args: Any, **kwargs: Any) -> Any:
        result = make_plan(*args, **kwargs)
        while actions:
            actions.pop()()
        return result

    monkeypatch.setattr(launcher_module, "make_plan", planned)
    yield actions.append
    assert not actions, "no launch planned a view"


def refused(launcher: Launcher, tmp_path: Path, **spec: Any) -> SandboxError:
    """The launch's error; the agent never ran (it would have printed what it saw)."""
    out = tmp_path / "out.log"
    with open(out, "wb") as stdout, pytest.raises(SandboxError) as info:
        launcher.launch(SandboxSpec(argv=["agent", "/"], env=dict(ENV), stdout_fd=stdout.fileno(), **spec))
    assert out.read_text() == ""
    return info.value


def assert_symlink_refused(error: SandboxError, path: Path, step: str) -> None:
    assert (error.step, error.errno) == (step, errno.ELOOP), error
    assert str(path) in error.message and "symlink" in error.message, error
    assert SECRET not in str(error)


def bind_of(field: str, checked: Path) -> tuple[str, dict[str, Any]]:
    """The script to run and the spec fields that bind ``checked`` as ``field``."""
    if field == "script directory":
        # The script's own directory, bound read-only for its imports.
        return str(checked / "agent.py"), {}
    value: Any = [str(checked)] if field.endswith("_paths") else str(checked)
    return agent("list_paths"), {field: value}


@pytest.mark.parametrize("field", ["readonly_paths", "writable_paths", "workdir", "workspace", "script directory"])
@pytest.mark.parametrize("where", ["the checked dir", "a parent of it"])
def test_a_bind_source_swapped_for_a_symlink_after_the_check_fails_naming_it(
        launcher: Launcher, tmp_path: Path, host: dict[str, Path], after_planning: Callable[..., None],
        field: str, where: str) -> None:
    checked, writable, secret = host["checked"], host["writable"], host["secret"]
    script, spec = bind_of(field, checked)
    dest = "/workspace" if field == "workspace" else str(checked)
    # Unswapped, the same spec binds the checked dir: the swap below is all that changes.
    seen = run_agent(launcher, tmp_path, script=script, argv=[dest], **spec).json()
    assert seen == {dest: ["agent.py", "mine.txt"]}
    swapped = checked if where == "the checked dir" else writable
    (secret / "checked").mkdir(exist_ok=True)  # so that a followed symlink in a parent would lead somewhere
    after_planning(lambda: swap(swapped, secret))
    error = refused(launcher, tmp_path, python_script=script, **spec)
    if field == "script directory":
        # The zygote reads the script before any bind: it refuses first.
        assert_symlink_refused(error, checked / "agent.py", "compile script")
        return
    idmapped = os.geteuid() == 0 and field != "readonly_paths"  # a root launcher's writable binds
    assert_symlink_refused(error, checked, f"{'idmap' if idmapped else 'mount'} {dest}")


def test_an_idmapped_read_only_bind_swapped_after_the_check_fails_naming_it(
        launcher: Launcher, tmp_path: Path, host: dict[str, Path], after_planning: Callable[..., None]) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root launcher's agents run as another uid, through idmapped binds")
    checked, secret = host["checked"], host["secret"]
    checked.chmod(0o700)  # closed to the agent's uid: bound idmapped
    spec: dict[str, Any] = {"readonly_paths": [str(checked)]}
    assert run_agent(launcher, tmp_path, script=agent("list_paths"), argv=[str(checked)], **spec).json() == {
        str(checked): ["agent.py", "mine.txt"]}
    after_planning(lambda: swap(checked, secret))
    error = refused(launcher, tmp_path, python_script=agent("list_paths"), **spec)
    assert_symlink_refused(error, checked, f"idmap {checked}")


def test_a_masked_path_moved_behind_a_symlink_after_planning_fails_instead_of_showing(
        launcher: Launcher, tmp_path: Path, host: dict[str, Path], after_planning: Callable[..., None]) -> None:
    """A mask is mounted on the path the planner found: if a symlink now leads there, the mask
    is not put wherever it points (leaving the real place bare), the launch fails."""
    writable = host["writable"]
    state = writable / "run" / "state"
    state.mkdir(parents=True)
    (state / "secret.txt").write_text(SECRET)
    spec: dict[str, Any] = {"writable_paths": [str(writable)], "masked_paths": [str(state)]}
    assert run_agent(launcher, tmp_path, script=agent("list_paths"), argv=[str(state)], **spec).json() == {
        str(state): []}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    after_planning(lambda: swap(writable / "run", elsewhere))
    error = refused(launcher, tmp_path, python_script=agent("list_paths"), **spec)
    assert_symlink_refused(error, state, f"mask {state}")


def test_a_script_swapped_after_the_check_is_never_read(
        launcher: Launcher, tmp_path: Path, host: dict[str, Path], after_planning: Callable[..., None]) -> None:
    """The zygote reads the script with the kernel's privileges: not through a symlink, and a
    FIFO put in its place does not stall it (the next launch still works)."""
    script = host["checked"] / "agent.py"

    def to_symlink() -> None:
        script.unlink()
        script.symlink_to(host["secret"] / "agent.py")

    def to_fifo() -> None:
        script.unlink()
        os.mkfifo(script)

    after_planning(to_symlink)
    assert_symlink_refused(refused(launcher, tmp_path, python_script=str(script)), script, "compile script")
    script.unlink()
    shutil.copy(agent("list_paths"), script)
    after_planning(to_fifo)
    error = refused(launcher, tmp_path, python_script=str(script))
    assert (error.step, error.errno) == ("compile script", errno.EINVAL) and "regular file" in error.message
    assert stat.S_ISFIFO(os.lstat(script).st_mode)
    assert run_agent(launcher, tmp_path, script=agent("list_paths"), argv=["/"]).returncode == 0


def test_a_cwd_symlink_leads_only_within_the_view(launcher: Launcher, tmp_path: Path,
                                                   host: dict[str, Path]) -> None:
    """The child changes directory after its view is built: a symlink in its cwd resolves in
    the view, where what the host path leads to is not."""
    writable, secret = host["writable"], host["secret"]
    (writable / "link").symlink_to(secret)
    error = refused(launcher, tmp_path, python_script=agent("list_paths"), writable_paths=[str(writable)],
                    cwd=str(writable / "link"))
    assert (error.step, error.errno) == ("cwd", errno.ENOENT), error


def test_binds_of_every_kind_still_show_what_they_bind(launcher: Launcher, tmp_path: Path,
                                                        host: dict[str, Path]) -> None:
    """Every bind goes through a descriptor, every target is reached without a symlink: a
    view with each kind of op (nested binds, a private workspace, device nodes, the system
    view and its symlinked dirs) still shows what it shows."""
    checked = host["checked"]
    (host["writable"] / "w").mkdir()
    spec: dict[str, Any] = {"readonly_paths": [str(checked)], "writable_paths": [str(host["writable"] / "w")],
                            "workspace": 1 << 20}
    seen = run_agent(launcher, tmp_path, script=agent("list_paths"),
                     argv=[str(checked), str(host["writable"] / "w"), "/workspace", "/dev/null", "/usr/bin"],
                     **spec).json()
    assert seen[str(checked)] == ["agent.py", "mine.txt"] and seen[str(host["writable"] / "w")] == []
    assert seen["/workspace"] == [] and seen["/dev/null"] == "read" and "env" in seen["/usr/bin"]
