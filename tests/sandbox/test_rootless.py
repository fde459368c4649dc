"""Rootless: a kernel run by an unprivileged uid still isolates its agents, with user namespaces."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.sandbox import mounts
from agentos.sandbox._syscalls import syscalls
from tests.sandbox.conftest import agent, require_root

NOBODY = 65534
#: sitecustomize that keeps a dev (editable) install from rebuilding as an unprivileged uid.
DEV_SITE = str(Path(agent("rootless_kernel")).parent / "dev_site")


def _blocked_ancestors(paths: list[str]) -> dict[str, set[str]]:
    """Directories that an unprivileged uid cannot traverse on the way to ``paths``, with
    the entries below them that it needs (e.g. /root (0700) -> {.pyenv})."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            parent = "/" + "/".join(parts[:depth])
            if not os.stat(parent).st_mode & 0o001:
                blocked.setdefault(parent, set()).add(parts[depth])
                break
    return blocked


def _become_unprivileged_kernel(argv: list[str]) -> None:
    """In the forked child: make this interpreter and the test agents reachable for nobody,
    drop to nobody, exec.

    Only this child's private mount namespace changes: a 0700 directory on the way
    (pyenv or a checkout under /root) is replaced by a world-traversable tmpfs holding
    binds of just the entries needed. The kernel itself then runs with no privilege.
    """
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    needed = [*mounts.python_paths(), str(Path(agent("rootless_kernel")).parent)]
    for directory, entries in _blocked_ancestors(needed).items():
        keep = {entry: os.open(f"{directory}/{entry}", os.O_PATH) for entry in entries}
        syscalls.mount("tmpfs", directory, "tmpfs", 0, "mode=0755")
        for entry, fd in keep.items():
            os.mkdir(f"{directory}/{entry}")
            syscalls.mount(f"/proc/self/fd/{fd}", f"{directory}/{entry}", None, syscalls.MS_BIND | syscalls.MS_REC)
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    os.execve(argv[0], argv, {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONPATH": DEV_SITE})


@pytest.fixture(scope="module")
def rootless_view() -> Iterator[dict[str, Any]]:
    require_root("sets up an unprivileged uid to run the launcher as")
    workdir = tempfile.mkdtemp(prefix="agentos-rootless-")
    os.chown(workdir, NOBODY, NOBODY)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    config = json.dumps({"workdir": workdir, "tcp": ["127.0.0.1", server.getsockname()[1]]})
    argv = [sys.executable, agent("rootless_kernel"), config]
    try:
        child = subprocess.run(argv, check=False, preexec_fn=lambda: _become_unprivileged_kernel(argv),
                               capture_output=True, text=True, timeout=120)
        if child.returncode != 0 and "user namespace" in child.stderr:
            pytest.skip(f"needs unprivileged user namespaces: {child.stderr[-500:]}")
        assert child.returncode == 0, child.stderr
        yield json.loads(child.stdout)
    finally:
        server.close()
        shutil.rmtree(workdir)


def test_the_launcher_really_ran_unprivileged(rootless_view: dict[str, Any]) -> None:
    assert rootless_view["uid"] == NOBODY
    assert rootless_view["isolation"]["rootless"] is True
    assert rootless_view["isolation"]["namespaces"][0] == "user"


def test_rootless_agent_gets_the_same_isolation(rootless_view: dict[str, Any]) -> None:
    view = rootless_view
    assert view["pid"] == 1 and view["proc_pids"] == [1]
    assert view["hostname"] == "rootless"
    assert view["links"] == ["lo"] and view["tcp"] == "ECONNREFUSED"
    assert view["write"]["/usr"] == "EROFS"
    assert view["write"]["/tmp"] == "ok"
    assert view["cap_eff"] == "0000000000000000"
    assert view["no_new_privs"] == "1" and view["seccomp"] == "2"


def test_rootless_agent_keeps_its_own_uid_and_work_dir(rootless_view: dict[str, Any]) -> None:
    # The uid maps to itself: files it owns look the same inside, nothing else is its own.
    assert rootless_view["uid"] == NOBODY
    assert rootless_view["write"][rootless_view["cwd"]] == "ok"
