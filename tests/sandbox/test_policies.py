"""The policy modules on their own: the seccomp filter, Landlock rules, planning and degrading, the probe."""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import socket
from pathlib import Path

import pytest

from agentos.sandbox import (
    HostSupport,
    Launcher,
    SandboxError,
    SandboxSpec,
    landlock,
    probe,
    seccomp,
)
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import make_plan
from tests.sandbox.conftest import in_child, require, require_root

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _errno_of(name: str, *args: int) -> int:
    """errno of a raw syscall (0 if it succeeded)."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(linux.SYSCALL_NUMBERS[name]), *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if result < 0 else 0


# Calls whose error without the filter differs from EPERM (bad arguments), so EPERM proves the filter.
PROBES = [("bpf", (-1, 0, 0)), ("keyctl", (-1, 0, 0, 0, 0)), ("perf_event_open", (0, 0, -1, -1, 0)),
          ("io_uring_setup", (0, 0)), ("setns", (-1, 0)), ("umount2", (0, 0)), ("open_by_handle_at", (-1, 0, 0)),
          ("kexec_load", (0, 0, 0, 0xFFFFFFFF)), ("reboot", (0, 0, 0, 0)), ("pidfd_getfd", (-1, 0, 0))]


def test_the_filter_turns_kernel_errors_into_eperm() -> None:
    require_root("compares against what root gets without the filter")

    def errors() -> tuple[dict[str, int], dict[str, int], int, int]:
        before = {name: _errno_of(name, *args) for name, args in PROBES}
        linux.set_no_new_privs()
        seccomp.install(seccomp.default_filter())
        after = {name: _errno_of(name, *args) for name, args in PROBES}
        clone3 = _errno_of("clone3", 0, 0)
        pid = os.fork()  # an ordinary fork still works (clone without namespace flags)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return before, after, clone3, linux.seccomp_mode()

    before, after, clone3, mode = in_child(errors)
    assert all(code != errno.EPERM for code in before.values()), before
    assert after == {name: errno.EPERM for name, _ in PROBES}
    assert clone3 == errno.ENOSYS  # so the C library falls back to clone, which is filtered
    assert mode == 2


def test_clone_with_a_namespace_flag_is_denied_without_one_allowed() -> None:
    def clone_errors() -> tuple[int, int]:
        linux.set_no_new_privs()
        seccomp.install(seccomp.default_filter())
        return _errno_of("unshare", linux.CLONE_NEWUTS), _errno_of("unshare", 0)

    assert in_child(clone_errors) == (errno.EPERM, errno.EPERM)  # unshare is denied whatever its flags


def test_vsock_sockets_are_denied_other_families_not() -> None:
    def families() -> tuple[int, int]:
        linux.set_no_new_privs()
        seccomp.install(seccomp.default_filter())
        return _errno_of("socket", socket.AF_VSOCK, socket.SOCK_STREAM, 0), _errno_of(
            "socket", socket.AF_UNIX, socket.SOCK_STREAM, 0)

    vsock, unix = in_child(families)
    assert vsock == errno.EPERM
    assert unix == 0  # the descriptor leaks into the child, which exits right away


def test_every_denied_name_this_arch_has_is_in_the_filter() -> None:
    program = seccomp.default_filter()
    constants = {int.from_bytes(program[i + 4:i + 8], "little") for i in range(0, len(program), 8)}
    for name in seccomp.DENIED:
        if name in linux.SYSCALL_NUMBERS:
            assert linux.SYSCALL_NUMBERS[name] in constants, name


def test_landlock_allows_writes_only_beneath_writable_paths(tmp_path: Path) -> None:
    version = landlock.abi()
    if not version:
        pytest.skip("needs Landlock: not enabled in this kernel")
    allowed, denied = tmp_path / "allowed", tmp_path / "denied"
    (allowed / "a").mkdir(parents=True)
    (allowed / "b").mkdir()
    denied.mkdir()
    (denied / "existing").write_text("readable")

    def outcomes() -> dict[str, str]:
        linux.set_no_new_privs()
        landlock.restrict(version, [str(allowed)])
        results = {}
        for name, action in {
            "write allowed": lambda: (allowed / "a" / "f").write_text("x"),
            "rename across allowed dirs": lambda: os.rename(allowed / "a" / "f", allowed / "b" / "f"),
            "write denied": lambda: (denied / "f").write_text("x"),
            "truncate denied": lambda: open(denied / "existing", "w").close(),
            "mkdir denied": lambda: (denied / "d").mkdir(),
            "read denied": lambda: (denied / "existing").read_text(),
            "write /dev/null": lambda: Path("/dev/null").write_text("x"),
        }.items():
            try:
                action()
                results[name] = "ok"
            except OSError as exc:
                results[name] = errno.errorcode[exc.errno or 0]
        return results

    results = in_child(outcomes)
    assert results["write allowed"] == "ok"
    assert results["rename across allowed dirs"] == ("ok" if version >= 2 else "EXDEV")
    assert results["write denied"] == results["truncate denied"] == results["mkdir denied"] == "EACCES"
    assert results["read denied"] == "ok"  # Landlock fences writes; the mount view fences reads
    assert results["write /dev/null"] == "ok"
    assert (denied / "existing").read_text() == "readable"


def _support(**changes: object) -> HostSupport:
    full = HostSupport(arch=linux.ARCH, root=True, user_namespaces=True, mount_setattr=True, seccomp=True,
                       landlock_abi=3, namespaces=dict.fromkeys(("user", "pid", "mount", "uts", "ipc", "net",
                                                                 "cgroup"), True))
    return dataclasses.replace(full, **changes)  # type: ignore[arg-type]


def test_a_missing_feature_is_refused_unless_degrading_is_allowed() -> None:
    no_landlock = _support(landlock_abi=0, notes={"landlock": "off at boot"})
    with pytest.raises(SandboxError) as info:
        make_plan(SandboxSpec(argv=["true"]), no_landlock, "/")
    assert info.value.step == "plan" and info.value.errno == errno.ENOTSUP
    assert "landlock" in info.value.message and "allow_degraded" in info.value.message
    plan, report = make_plan(SandboxSpec(argv=["true"], allow_degraded=True), no_landlock, "/")
    assert plan.landlock_abi == 0
    assert report["degraded"] == ["landlock: off at boot"] and report["landlock_abi"] == 0


def test_a_missing_namespace_degrades_only_that_namespace() -> None:
    no_net = _support(namespaces={**_support().namespaces, "net": False}, notes={"net": "refused"})
    plan, report = make_plan(SandboxSpec(argv=["true"], allow_degraded=True), no_net, "/")
    assert "net" not in report["namespaces"] and "pid" in report["namespaces"]
    assert report["network"] == "host" and report["degraded"] == ["net namespace: refused"]
    assert not plan.clone_flags & linux.CLONE_NEWNET


def test_network_true_needs_no_net_namespace() -> None:
    plan, report = make_plan(SandboxSpec(argv=["true"], network=True), _support(), "/")
    assert "net" not in report["namespaces"] and report["network"] == "host"
    assert not plan.loopback


def test_a_forced_user_namespace_maps_the_callers_ids() -> None:
    plan, report = make_plan(SandboxSpec(argv=["true"], user_namespace=True), _support(), "/")
    assert plan.user_map == (os.geteuid(), os.getegid())
    assert report["namespaces"][0] == "user"


def test_probe_finds_what_the_launcher_uses(launcher: Launcher) -> None:
    require(launcher, "pid", "mount")
    here = probe().as_dict()
    assert here == launcher.support.as_dict()  # the zygote probed the same host
    assert here["arch"] == linux.ARCH and here["mount_setattr"] is True
