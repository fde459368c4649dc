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
from typing import Any

import pytest

from tests.sandbox.conftest import agent, require_root
from tests.unprivileged import DEV_SITE, become

NOBODY = 65534


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
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONPATH": DEV_SITE}
        child = subprocess.run(argv, check=False, preexec_fn=lambda: become(NOBODY, NOBODY, argv, env, [argv[1]]),
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
    assert rootless_view["isolation"]["uid"] == NOBODY  # its own: nothing to map to
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
