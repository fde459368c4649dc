"""A sandboxed agent writes only where it was given, and reads nothing it was not shown:
symlinks, hard links, file handles, device nodes, /proc and /sys lead nowhere."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def places(hostile: HostileKernel) -> Iterator[dict[str, str]]:
    """A writable work dir for the agent (owned by the kernel's uid) and a host dir it is not given."""
    with tempfile.TemporaryDirectory(prefix="agentos-sec-fs-") as base:
        work, outside = Path(base, "work"), Path(base, "outside")
        for directory in (work, outside):
            directory.mkdir()
        Path(base).chmod(0o755)
        owner = os.stat(hostile.process.root)
        os.chown(work, owner.st_uid, owner.st_gid)
        yield {"work": str(work), "outside": str(outside)}


@pytest.fixture(scope="module")
def filesystem(hostile: HostileKernel, places: dict[str, str]) -> dict[str, Any]:
    report = hostile.attack("fs_attack", places, cwd=places["work"], writable_paths=[places["work"]])
    report["places"] = places
    return report


@pytest.mark.parametrize("attempt, refused", [
    ("create in /usr", ("EROFS",)),
    ("create in /etc", ("EROFS",)),
    ("create in /", ("EROFS",)),
    ("create in a host dir outside the view", ("ENOENT",)),
])
def test_writes_outside_writable_paths_fail(filesystem: dict[str, Any], attempt: str, refused: tuple[str]) -> None:
    assert filesystem["outcomes"][attempt] in refused
    assert os.listdir(filesystem["places"]["outside"]) == []


@pytest.mark.parametrize("attempt, refused", [
    ("write /etc/passwd through a symlink", ("EROFS", "EACCES")),
    ("follow a symlink to a host dir outside the view", ("ENOENT",)),
    # Across mounts (EXDEV); and never onto a file the agent does not own (EPERM).
    ("hard link /etc/passwd into the work dir", ("EXDEV", "EPERM")),
    ("host root through /proc/1/root", ("ENOENT",)),
])
def test_link_tricks_lead_nowhere(filesystem: dict[str, Any], attempt: str, refused: tuple[str]) -> None:
    assert filesystem["outcomes"][attempt] in refused


def test_file_handles_are_refused(filesystem: dict[str, Any]) -> None:
    # name_to_handle_at is denied first; a forged handle would meet open_by_handle_at's EPERM.
    assert filesystem["outcomes"]["open_by_handle_at"] == "EPERM"


@pytest.mark.parametrize("attempt", ["mknod a block device", "mknod /dev/mem"])
def test_no_device_nodes(filesystem: dict[str, Any], attempt: str) -> None:
    assert filesystem["outcomes"][attempt] == "EPERM"


@pytest.mark.parametrize("attempt, refused", [
    ("write /proc/sys", ("EROFS", "EACCES")),
    ("write /proc/sysrq-trigger", ("EROFS", "EACCES", "ENOENT")),
    ("write /sys", ("ENOENT", "EROFS", "EACCES")),
])
def test_proc_and_sys_are_read_only(filesystem: dict[str, Any], attempt: str, refused: tuple[str]) -> None:
    assert filesystem["outcomes"][attempt] in refused


def test_the_known_escapes_all_fail(hostile: HostileKernel) -> None:
    """The adversarial example of agents/examples: mounts, namespaces, modules, keyrings, TIOCSTI, vsock."""
    report = hostile.attack("escape_attempts")
    assert report["escaped"] == [], {name: report["outcomes"][name] for name in report["escaped"]}


def test_host_secrets_readable_only_by_root_stay_unreadable(filesystem: dict[str, Any]) -> None:
    # Agents never run as the host's root, even for a root kernel; /etc/shadow-class files may also be masked.
    assert filesystem["outcomes"]["read /etc/shadow"] in ("EACCES", "ENOENT")
