"""Shared pieces of the process tests: the test agents and where a kernel's cgroups live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentos.cgroups import TOP, detect, instance_name, open_driver
from agentos.testing.kernel import KernelProcess

AGENTS = Path(__file__).parent / "agents"
ADVERSARIAL = Path(__file__).resolve().parents[2] / "agents" / "examples" / "adversarial"


def agent(name: str) -> str:
    """Path of a test agent script."""
    return str(AGENTS / f"{name}.py")


def adversarial(name: str) -> str:
    """Path of one of the example adversarial agents (memory_hog, fork_bomb, cpu_hog ...)."""
    return str(ADVERSARIAL / f"{name}.py")


def kernel_cgroup_dirs(kernel_pid: int) -> list[Path]:
    """The ``agentos/<instance>`` directories the kernel with ``kernel_pid`` works in."""
    driver = open_driver(detect())
    instance = instance_name(kernel_pid)
    return [root / TOP / instance for root in driver.roots]


def require_cgroup_limits() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: agents get cgroup limits")
    if open_driver(detect()).enforceable != {"memory", "pids", "cpu"}:
        pytest.skip("needs a host whose cgroups enforce memory, pids and cpu")


@pytest.fixture(params=[False, True], ids=["plain", "sandboxed"])
def sandboxed(request: pytest.FixtureRequest) -> bool:
    """Run the test with an unsandboxed agent and with a sandboxed one."""
    if request.param and os.geteuid() != 0:
        pytest.skip("needs root: the full sandbox (namespaces, seccomp, Landlock)")
    return bool(request.param)


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory: pytest.TempPathFactory):
    """One kernel for a whole test module (tests name their agents apart); checked like ``kernel``."""
    k = KernelProcess(tmp_path_factory.mktemp("shared") / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
