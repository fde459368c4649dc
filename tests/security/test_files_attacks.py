"""FILE_* crosses no trust boundary: files are read and written by a worker confined as the agent
is, so nothing outside the agent's view is reachable (``..``, absolute paths, symlinks, magic
links, hard links, tar members), its uid and read-only binds hold, its disk quota holds, and a
watch flood stays bounded. Both kernel modes (root and unprivileged)."""
from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentos.errors import InvalidArgument, NotFound, PermissionDenied, SyscallError, TooLarge

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def target(hostile: HostileKernel) -> Iterator[dict[str, Any]]:
    agent = hostile.admin.spawn("files-target", command=["/bin/sleep", "100000"],
                                limits={"tmp": "4Mi", "pids": 64})
    try:
        yield agent
    finally:
        hostile.admin.kill(id=agent["id"], grace=0)


def _refused(hostile: HostileKernel, agent: dict[str, Any], path: str) -> str:
    try:
        data = hostile.admin.read_file(agent["name"], path)
    except (NotFound, PermissionDenied) as exc:
        return exc.code.value
    return f"read {len(data)} bytes"


def test_files_are_the_agents(hostile: HostileKernel, target: dict[str, Any]) -> None:
    hostile.admin.write_file(target["name"], "/tmp/mine", b"x")
    owner = hostile.admin.stat(target["name"], "/tmp/mine")
    seen = hostile.admin.exec(target["name"], ["stat", "-c", "%u", "/tmp/mine"]).stdout.decode().strip()
    assert owner.uid == int(seen)  # as the agent sees it: its own file
    uid = 65533 if hostile.mode == "root" else os.stat(hostile.process.root).st_uid
    assert int(hostile.admin.exec(target["name"], ["id", "-u"]).stdout) == uid
    assert owner.uid == int(hostile.admin.exec(target["name"], ["id", "-u"]).stdout)


def test_no_escape_by_dotdot_absolute_or_magic_links(hostile: HostileKernel, target: dict[str, Any]) -> None:
    state = str(hostile.process.state_dir)
    outcomes = {
        "state dir": _refused(hostile, target, f"{state}/logs"),
        "dotdot to state": _refused(hostile, target, f"/tmp/../../../../{state.lstrip('/')}/logs"),
        "relative dotdot": _refused(hostile, target, "../../../../../../etc/shadow"),
        "shadow": _refused(hostile, target, "/etc/shadow"),
        "proc root": _refused(hostile, target, "/proc/self/root/etc/hostname"),
        "proc 1 root": _refused(hostile, target, "/proc/1/root/etc/hostname"),
        "kernel socket": _refused(hostile, target, str(hostile.process.socket_path)),
    }
    assert outcomes == {"state dir": "not_found", "dotdot to state": "not_found",
                        "relative dotdot": outcomes["shadow"], "shadow": outcomes["shadow"],
                        "proc root": "permission_denied", "proc 1 root": "permission_denied",
                        "kernel socket": "not_found"}
    assert outcomes["shadow"] in ("permission_denied", "not_found")
    with pytest.raises((NotFound, PermissionDenied)):
        hostile.admin.list_dir(target["name"], state)


def test_symlinks_resolve_in_the_view_and_magic_ones_not_at_all(hostile: HostileKernel,
                                                                target: dict[str, Any]) -> None:
    state = str(hostile.process.state_dir)
    hostile.admin.exec(target["name"], "ln -sfn /proc/self/root/etc /tmp/magic; "
                                       f"ln -sfn {state} /tmp/state; ln -sfn / /tmp/root")
    assert _refused(hostile, target, "/tmp/magic/hostname") == "permission_denied"
    assert _refused(hostile, target, "/tmp/state/logs") == "not_found"
    # A link to / is the view's root: what it reaches, the agent reaches anyway.
    assert hostile.admin.read_file(target["name"], "/tmp/root/etc/hostname") == \
        hostile.admin.exec(target["name"], ["cat", "/etc/hostname"]).stdout
    with pytest.raises((NotFound, PermissionDenied)):
        hostile.admin.write_file(target["name"], "/tmp/state/planted", b"x")
    assert not os.path.exists(f"{state}/planted")


def test_a_symlink_swapped_in_between_check_and_use(hostile: HostileKernel, target: dict[str, Any]) -> None:
    """The agent flips /tmp/flip between a file and a magic link while the kernel reads it:
    each read is the file or a refusal, never what the link names."""
    hostile.admin.write_file(target["name"], "/tmp/plain", b"plain")
    flipper = hostile.admin.exec_start(target["name"], "while :; do ln -sfn /tmp/plain /tmp/flip; "
                                                       "ln -sfn /proc/1/root/etc/passwd /tmp/flip; done")
    try:
        outcomes = set()
        for _ in range(200):
            try:
                outcomes.add(hostile.admin.read_file(target["name"], "/tmp/flip"))
            except (NotFound, PermissionDenied) as exc:
                outcomes.add(exc.code.value)
    finally:
        hostile.admin.exec_signal(flipper["id"], "KILL")
        hostile.admin.exec_wait(flipper["id"])
    assert outcomes <= {b"plain", "permission_denied", "not_found"}, outcomes


def test_hard_links_and_read_only_binds(hostile: HostileKernel, target: dict[str, Any]) -> None:
    made = hostile.admin.exec(target["name"], "ln /etc/passwd /tmp/hard 2>&1; echo $?")
    assert made.stdout.split()[-1] != b"0"  # another mount (and protected_hardlinks)
    for path in ("/usr/planted", "/etc/passwd", "/planted"):
        with pytest.raises(PermissionDenied):
            hostile.admin.write_file(target["name"], path, b"x")
    with pytest.raises(PermissionDenied):
        hostile.admin.remove(target["name"], "/etc/hostname")
    with pytest.raises(PermissionDenied):
        hostile.admin.mkdir(target["name"], "/usr/planted")


def test_the_disk_quota_holds(hostile: HostileKernel, target: dict[str, Any]) -> None:
    with pytest.raises(TooLarge) as full:
        hostile.admin.write_file(target["name"], "/tmp/fill", b"\0" * (6 * 1024 * 1024))  # /tmp is 4Mi
    assert full.value.details.get("errno") == "ENOSPC"
    hostile.admin.remove(target["name"], "/tmp/fill")
    assert hostile.alive()


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def test_tar_slip_is_refused(hostile: HostileKernel, target: dict[str, Any]) -> None:
    hostile.admin.mkdir(target["name"], "/tmp/dest")
    state = str(hostile.process.state_dir)
    attacks = {
        "dotdot": _tar((_member("../slipped"), b"x")),
        "absolute": _tar((_member("/tmp/slipped"), b"x")),
        "through a symlink": _tar((_member("out", tarfile.SYMTYPE, "/tmp"), b""),
                                  (_member("out/slipped"), b"x")),
        "to the state dir": _tar((_member("st", tarfile.SYMTYPE, state), b""), (_member("st/slipped"), b"x")),
        "device": _tar((_member("null", tarfile.CHRTYPE), b"")),
        "hard link": _tar((_member("h", tarfile.LNKTYPE, "/etc/passwd"), b"")),
    }
    outcomes = {}
    for label, archive in attacks.items():
        try:
            hostile.admin.upload_dir(target["name"], archive, "/tmp/dest")
            outcomes[label] = "unpacked"
        except SyscallError as exc:
            outcomes[label] = exc.code.value
    assert outcomes == {"dotdot": "invalid_argument", "absolute": "invalid_argument",
                        "through a symlink": "permission_denied", "to the state dir": "permission_denied",
                        "device": "invalid_argument", "hard link": "invalid_argument"}
    for path in ("/tmp/slipped", "/tmp/dest/null", "/tmp/dest/h"):
        with pytest.raises(NotFound):
            hostile.admin.stat(target["name"], path)
    assert not os.path.exists(f"{state}/slipped")
    hostile.admin.remove(target["name"], "/tmp/dest", recursive=True)


def test_huge_paths_are_refused(hostile: HostileKernel, target: dict[str, Any]) -> None:
    for path in ("/tmp/" + "a" * 5000, "/tmp/" + "b" * 300, "/tmp/" + "c/" * 2000):
        with pytest.raises((InvalidArgument, NotFound)) as refused:
            hostile.admin.read_file(target["name"], path)
        if isinstance(refused.value, InvalidArgument):
            assert refused.value.details["field"] == "path"
    assert hostile.alive()


def test_a_watch_flood_stays_bounded(hostile: HostileKernel, target: dict[str, Any]) -> None:
    hostile.admin.mkdir(target["name"], "/tmp/flood")
    events: list[Any] = []
    ready, done = threading.Event(), threading.Event()
    with hostile.process.client(timeout=120) as watcher:
        def watch() -> None:
            for event in watcher.watch(target["name"], "/tmp/flood"):
                events.append(event)
                if event.event == "ready":
                    ready.set()
                    done.wait(120)  # not reading while the flood comes
                elif event.event == "created" and event.path == "last":
                    return

        thread = threading.Thread(target=watch)
        thread.start()
        assert ready.wait(120)
        # 80,000 events, more than the kernel buffers for a client that does not read (its 4 MiB
        # high-water mark) plus the watch's queue: the rest must be dropped, and said so.
        hostile.admin.exec(target["name"], "cd /tmp/flood; i=0; while [ $i -lt 40000 ]; do : > f$i; "
                                           "i=$((i+1)); done")
        done.set()
        hostile.admin.write_file(target["name"], "/tmp/flood/last", b"")
        thread.join(120)
    assert not thread.is_alive()
    overflow = [e for e in events if e.event == "overflow"]
    assert overflow and sum(e.dropped for e in overflow) > 0
    assert len(events) < 80_000
    hostile.admin.remove(target["name"], "/tmp/flood", recursive=True)
    assert hostile.alive()
