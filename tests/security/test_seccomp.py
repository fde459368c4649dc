"""Every syscall on the sandbox's deny list answers EPERM inside an agent (clone3: ENOSYS, so
the C library falls back to clone, whose namespace flags are refused)."""
from __future__ import annotations

from typing import Any

import pytest

from agentos.sandbox._linux import linux
from agentos.sandbox.seccomp import DENIED

from .conftest import HostileKernel

FILTERED = [name for name in DENIED if name in linux.SYSCALL_NUMBERS]
BY_ARGUMENT = {"ioctl TIOCSTI": "EPERM", "ioctl TIOCLINUX": "EPERM", "clone with a new user namespace": "EPERM",
               "clone3": "ENOSYS", "socket AF_VSOCK": "EPERM"}


@pytest.fixture(scope="module")
def seccomp(hostile: HostileKernel) -> dict[str, Any]:
    return hostile.attack("seccomp_list")


def test_the_agent_tried_the_whole_list(seccomp: dict[str, Any]) -> None:
    assert seccomp["denied"] == FILTERED


@pytest.mark.parametrize("name", FILTERED)
def test_denied_syscall_is_eperm(seccomp: dict[str, Any], name: str) -> None:
    assert seccomp["outcomes"][name] == "EPERM"


@pytest.mark.parametrize("name", list(BY_ARGUMENT))
def test_filtered_by_argument(seccomp: dict[str, Any], name: str) -> None:
    assert seccomp["outcomes"][name] == BY_ARGUMENT[name]
