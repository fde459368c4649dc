"""The compiled Linux layer: each call does what it says or raises OSError naming what it did."""
from __future__ import annotations

import errno
import os
import signal
import socket

import pytest

from agentos._extensions import load_required
from agentos.sandbox._linux import linux
from tests.sandbox.conftest import in_child, require_root


def test_the_module_is_compiled_and_has_no_twin() -> None:
    assert (linux.__file__ or "").endswith(".so")
    with pytest.raises(ImportError):
        load_required("no_such_module")


def test_errors_carry_errno_and_what_was_being_done() -> None:
    with pytest.raises(OSError) as info:
        linux.mount("/nonexistent-source", "/nonexistent-target", None, linux.MS_BIND)
    assert info.value.errno in (errno.ENOENT, errno.EPERM)
    assert "mount /nonexistent-source on /nonexistent-target" in str(info.value)
    with pytest.raises(ProcessLookupError) as lookup:
        linux.pidfd_open(2**22 + 1)
    assert "pidfd_open" in str(lookup.value)


def test_paths_with_nul_bytes_are_refused_before_the_kernel() -> None:
    with pytest.raises(ValueError):
        linux.umount2("/tmp/\0x")


def test_clone3_child_is_pid_1_of_its_pid_namespace() -> None:
    require_root("creates a pid namespace")
    assert in_child(os.getpid, linux.CLONE_NEWPID | linux.CLONE_NEWNS) == 1


def test_clone3_parent_flag_makes_the_child_a_sibling() -> None:
    def start_sibling() -> tuple[int, int]:
        r, w = os.pipe()
        pid, pidfd = linux.clone3(linux.CLONE_PARENT)
        if pid == 0:
            os.write(w, str(os.getppid()).encode())
            os._exit(7)
        os.close(w)
        parent = int(os.read(r, 32))
        # Not our child: we cannot reap it, only our parent can.
        with pytest.raises(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        os.close(pidfd)
        return parent, pid

    parent, pid = in_child(start_sibling)
    assert parent == os.getpid()
    assert os.waitpid(pid, 0) == (pid, 7 << 8)


def test_pidfd_send_signal_kills_by_pidfd() -> None:
    pid, pidfd = linux.clone3(0)
    if pid == 0:
        signal.pause()
        os._exit(0)
    try:
        linux.pidfd_send_signal(pidfd, signal.SIGKILL)
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert result is not None and (result.si_code, result.si_status) == (os.CLD_KILLED, signal.SIGKILL)
        with pytest.raises(ProcessLookupError):
            linux.pidfd_send_signal(pidfd, signal.SIGKILL)  # reaped: the pidfd never hits a new process
    finally:
        os.close(pidfd)


def test_prctl_flags_apply_to_the_calling_process() -> None:
    def flags() -> tuple[bool, bool, int]:
        before = linux.get_no_new_privs()
        linux.set_no_new_privs()
        linux.set_pdeathsig(signal.SIGKILL)
        return before, linux.get_no_new_privs(), linux.get_pdeathsig()

    assert in_child(flags) == (False, True, signal.SIGKILL)


def test_drop_capabilities_empties_every_set() -> None:
    require_root("holds capabilities to drop")

    def drop() -> dict[str, str]:
        linux.drop_capabilities()
        with open("/proc/self/status") as f:
            return {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k.startswith("Cap")}

    caps = in_child(drop)
    assert set(caps.values()) == {"0000000000000000"}, caps


def test_uts_and_net_namespaces() -> None:
    require_root("creates uts and net namespaces")

    def inside() -> tuple[str, list[str]]:
        linux.sethostname("sandboxed-host")
        linux.set_link_up("lo")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        return socket.gethostname(), [name for _, name in socket.if_nameindex()]

    hostname, links = in_child(inside, linux.CLONE_NEWUTS | linux.CLONE_NEWNET)
    assert hostname == "sandboxed-host" != socket.gethostname()
    assert links == ["lo"]


def test_mount_pivot_root_and_mount_setattr_in_a_mount_namespace(tmp_path) -> None:
    require_root("creates a mount namespace")
    (tmp_path / "new").mkdir()

    def inside() -> tuple[list[str], int | None]:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
        new = str(tmp_path / "new")
        linux.mount("tmpfs", new, "tmpfs", 0, "mode=0755")
        os.mkdir(new + "/inside")
        linux.mount_setattr(new, linux.MOUNT_ATTR_RDONLY, recursive=False)
        os.chdir(new)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        try:
            os.mkdir("/x")
        except OSError as exc:
            return os.listdir("/"), exc.errno
        return os.listdir("/"), 0

    assert in_child(inside, linux.CLONE_NEWNS) == (["inside"], errno.EROFS)


def test_pivot_root_outside_a_mount_point_is_einval() -> None:
    require_root("creates a mount namespace")

    def inside() -> None:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.pivot_root("/proc/self", "/proc/self")

    with pytest.raises(OSError) as info:
        in_child(inside, linux.CLONE_NEWNS)
    assert info.value.errno in (errno.EINVAL, errno.ENOTDIR, errno.EBUSY)
    assert "pivot_root" in str(info.value)


def test_close_range_closes_the_range() -> None:
    fds = [os.dup(0) for _ in range(3)]
    linux.close_range(fds[0], fds[-1])
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_seccomp_rejects_malformed_programs_before_the_kernel() -> None:
    with pytest.raises(ValueError):
        linux.seccomp_set_filter(b"\0" * 7)
    with pytest.raises(ValueError):
        linux.seccomp_set_filter(b"")


def test_landlock_abi_is_reported_or_refused() -> None:
    try:
        abi = linux.landlock_abi()
    except OSError as exc:
        assert exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP)
    else:
        assert abi >= 1


def test_syscall_table_knows_this_architecture() -> None:
    assert linux.ARCH in ("x86_64", "aarch64")
    assert {"mount", "ptrace", "unshare", "bpf", "keyctl", "clone", "clone3", "ioctl"} <= set(linux.SYSCALL_NUMBERS)


def test_run_view_reports_the_failing_step_and_skips_optional_ones(tmp_path) -> None:
    require_root("creates a mount namespace")
    from agentos.sandbox.mounts import MountOp, view_program

    root = tmp_path / "root"
    root.mkdir()
    # /proc's masks of files this kernel may lack are optional; the bind is not.
    ops = (MountOp("proc", "/proc"), MountOp("tmpfs", "/tmp", readonly=False),
           MountOp("bind", "/missing", "/nonexistent-source"))

    def build() -> tuple[str, int, str]:
        try:
            linux.run_view(bytearray(view_program(ops, str(root))))
        except linux.StepError as exc:
            return exc.step, exc.errno, exc.filename
        return "", 0, ""

    step, err, path = in_child(build, linux.CLONE_NEWNS | linux.CLONE_NEWPID)
    assert (step, err) == ("mount /missing", errno.ENOENT)
    assert path == "/nonexistent-source"  # the path that failed: the bind's source here
    assert os.listdir(root) == []  # all of it happened in the child's mount namespace


def test_run_view_reaches_a_binds_target_before_it_copies_the_source(tmp_path) -> None:
    """A copy of the source's tree closed unattached is dissolved, and that waits for an
    expedited RCU grace period (issue 17: three a sandbox on a kernel without /proc/kcore and
    the like, each a mask's target missing): a missing target fails the bind first. Shown with
    a source that cannot be copied (an unbindable mount): the target's ENOENT is the error."""
    require_root("creates a mount namespace")
    from agentos.sandbox.mounts import _Program

    source, root = tmp_path / "unbindable", tmp_path / "root"
    source.mkdir()
    root.mkdir()
    program = _Program()
    program.bind("mount /missing", str(source), str(root / "missing"), recursive=False)

    def build() -> tuple[str, int, str]:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
        linux.mount("tmpfs", str(source), "tmpfs", 0, "mode=0755")
        linux.mount(None, str(source), None, 1 << 17)  # MS_UNBINDABLE: open_tree refuses a copy
        try:
            linux.run_view(program.code)
        except linux.StepError as exc:
            return exc.step, exc.errno, exc.filename
        return "", 0, ""

    assert in_child(build, linux.CLONE_NEWNS) == ("mount /missing", errno.ENOENT, str(root / "missing"))
    assert os.listdir(root) == []


def _malformed_tail(kind: str) -> bytes:
    from agentos.sandbox.mounts import _Program

    program = _Program()
    if kind == "a path its opcode needs is NULL":
        program.add("mount /x", linux.VIEW_MOUNT, "tmpfs", None, "tmpfs")
        return bytes(program.code)
    program.mkdirs("mkdirs /y", "/y")
    code = bytes(program.code)
    return code[:linux.VIEW_HEADER - 1] if kind == "header cut short" else code[:-1]


@pytest.mark.parametrize("kind", ["header cut short", "last string without its NUL",
                                  "a path its opcode needs is NULL"])
def test_run_view_refuses_a_malformed_program_before_its_first_step(tmp_path, kind: str) -> None:
    from agentos.sandbox.mounts import _Program

    made = tmp_path / "made"
    program = _Program()
    program.mkdirs(f"mkdirs {made}", str(made))
    with pytest.raises(ValueError, match=f"instruction at byte {len(program.code)} of"):
        linux.run_view(program.code + _malformed_tail(kind))
    assert not made.exists()  # decoded whole before anything ran
