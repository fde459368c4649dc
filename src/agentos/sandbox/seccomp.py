"""The default seccomp filter: deny with EPERM what an agent never needs.

A deny list, not an allow list: agents run arbitrary interpreters and tools, and
an allow list that misses one syscall breaks them in ways nobody can debug. What
is denied is the kernel attack surface and every way out of the sandbox: mounts,
namespaces, ptrace and cross-process memory access, kexec, BPF, module loading,
keyrings, reboot, swap, perf events, clock setting, file handles, io_uring,
userfaultfd, TIOCSTI terminal injection, vsock sockets (which no network namespace
confines: inside a VM they reach the hypervisor). ``clone`` is allowed unless it asks for
a namespace; ``clone3`` (whose flags seccomp cannot read) answers ENOSYS so the C
library falls back to ``clone``. A syscall from another architecture's ABI
(i386 via int 0x80) kills the process: its numbers mean different syscalls.
"""
from __future__ import annotations

import errno
import functools
import struct

from agentos.sandbox._linux import linux

__all__ = ["DENIED", "default_filter", "install", "supported"]

#: Syscalls that return EPERM (names this architecture lacks are simply absent).
DENIED = (
    # file-system view and namespaces
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    # the kernel itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "reboot", "swapon", "swapoff",
    "syslog", "acct", "iopl", "ioperm", "quotactl", "quotactl_fd", "nfsservctl", "uselib",
    "lookup_dcookie", "vhangup", "sysfs", "_sysctl", "vm86", "vm86old",
    # attack surface no agent needs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "add_key", "request_key", "keyctl", "open_by_handle_at",
    "name_to_handle_at", "fanotify_init",
    # the host's clocks
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
)

_NAMESPACE_FLAGS = (linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWUSER
                    | linux.CLONE_NEWPID | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP)
_DENIED_IOCTLS = (linux.TIOCSTI, linux.TIOCLINUX)
#: vsock is not network-namespaced: in a VM it would reach the hypervisor's services.
_AF_VSOCK = 40

# classic BPF opcodes (linux/filter.h) and seccomp_data offsets (linux/seccomp.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_NR = 0
_ARCH = 4
_ARG_LOW = (16, 24, 32, 40, 48, 56)  # low 32 bits of args[i] (little endian)
_X32_SYSCALL_BIT = 0x40000000

_ALLOW = linux.SECCOMP_RET_ALLOW
_KILL = linux.SECCOMP_RET_KILL_PROCESS


def _errno(code: int) -> int:
    return linux.SECCOMP_RET_ERRNO | code


class _Program:
    """A tiny classic-BPF assembler: forward jumps to labels, resolved on ``assemble``."""

    def __init__(self) -> None:
        self._insns: list[tuple[int, int | str, int | str, int]] = []
        self._labels: dict[str, int] = {}

    def load(self, offset: int) -> None:
        self._insns.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, if_true: int | str = 0, if_false: int | str = 0) -> None:
        self._insns.append((op, if_true, if_false, k))

    def ret(self, action: int) -> None:
        self._insns.append((_RET_K, 0, 0, action))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, jt, jf, k) in enumerate(self._insns):
            out += struct.pack("<HBBI", code, self._offset(pc, jt), self._offset(pc, jf), k & 0xFFFFFFFF)
        return bytes(out)

    def _offset(self, pc: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        offset = self._labels[target] - pc - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp jump to {target} out of range")
        return offset


def supported() -> bool:
    """Whether this build's architecture can be filtered (its audit arch is known)."""
    return linux.AUDIT_ARCH != 0


@functools.lru_cache(maxsize=1)
def default_filter() -> bytes:
    """The default deny-list filter as packed ``struct sock_filter``s."""
    if not supported():
        raise OSError(errno.ENOTSUP, f"no seccomp policy for architecture {linux.ARCH}")
    numbers = linux.SYSCALL_NUMBERS
    denied = sorted({numbers[name] for name in DENIED if name in numbers})
    p = _Program()
    p.load(_ARCH)
    p.jump(_JEQ_K, linux.AUDIT_ARCH, 0, "kill")
    p.load(_NR)
    p.jump(_JGE_K, _X32_SYSCALL_BIT, "deny", 0)
    p.jump(_JEQ_K, numbers["clone"], "clone", 0)
    p.jump(_JEQ_K, numbers["clone3"], "enosys", 0)
    p.jump(_JEQ_K, numbers["ioctl"], "ioctl", 0)
    p.jump(_JEQ_K, numbers["socket"], "socket", 0)
    _search(p, denied)
    p.label("clone")
    p.load(_ARG_LOW[0])
    p.jump(_JSET_K, _NAMESPACE_FLAGS, "deny", 0)
    p.ret(_ALLOW)
    p.label("ioctl")
    p.load(_ARG_LOW[1])
    for request in _DENIED_IOCTLS:
        p.jump(_JEQ_K, request, "deny", 0)
    p.ret(_ALLOW)
    p.label("socket")
    p.load(_ARG_LOW[0])
    p.jump(_JEQ_K, _AF_VSOCK, "deny", 0)
    p.ret(_ALLOW)
    p.label("enosys")
    p.ret(_errno(errno.ENOSYS))
    p.label("deny")
    p.ret(_errno(errno.EPERM))
    p.label("kill")
    p.ret(_KILL)
    return p.assemble()


def _search(p: _Program, numbers: list[int]) -> None:
    """A binary search over the sorted denied ``numbers``: deny if found, else allow.

    A handful of comparisons per syscall instead of one per denied name, which also
    keeps the kernel's per-filter cache computation (run once per sandbox) short.
    """
    if len(numbers) <= 3:
        for nr in numbers:
            p.jump(_JEQ_K, nr, "deny", 0)
        p.ret(_ALLOW)
        return
    middle = len(numbers) // 2
    upper = f"from {numbers[middle]}"
    p.jump(_JGE_K, numbers[middle], upper, 0)
    _search(p, numbers[:middle])
    p.label(upper)
    _search(p, numbers[middle:])


def install(program: bytes) -> None:
    """Install ``program`` on this process (runs in the child, after no_new_privs)."""
    linux.seccomp_set_filter(program)
