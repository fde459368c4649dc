"""Try the known ways out of a sandbox, with harmless arguments, and report each outcome.

Every attempt is safe to run anywhere: arguments are chosen so that, if nothing blocks
the call, the kernel rejects it on its own (a missing path, a bad magic number).
Prints {"agent": "escape_attempts", "outcomes": {name: errno name | "ok" | "empty"},
"expected": {name: outcome inside an agentos sandbox}, "escaped": [names that differ]}.
"""
import ctypes
import errno
import os
import platform
import socket
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, ready

# name: (x86_64, aarch64 -- the generic table)
NR_BY_ARCH = {
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "unshare": (272, 97),
    "setns": (308, 268),
    "ptrace": (101, 117),
    "bpf": (321, 280),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "reboot": (169, 142),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "delete_module": (176, 106),
    "finit_module": (313, 273),
    "swapon": (167, 224),
    "perf_event_open": (298, 241),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "open_by_handle_at": (304, 265),
    "io_uring_setup": (425, 425),
    "userfaultfd": (323, 282),
    "process_vm_readv": (310, 270),
    "clone": (56, 220),
    "clone3": (435, 435),
    "syslog": (103, 116),
    "acct": (163, 89),
    "mount_setattr": (442, 442),
    "fsopen": (430, 430),
    "open_tree": (428, 428),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "ioctl": (16, 29),
}
NR = {name: numbers[("x86_64", "aarch64").index(platform.machine())] for name, numbers in NR_BY_ARCH.items()}
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD, TIOCSTI = 0x10000000, 0x00020000, 17, 0x5412

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(name, *args):
    def call():
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
        if result == 0 and name == "clone":
            os._exit(0)  # a child was created after all: it must not run the rest of this script
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        if name == "userfaultfd":
            os.close(result)
    return call


def open_for_writing(path):
    # Opening is the check: nothing is ever written, so a host without a sandbox is unharmed.
    def call():
        os.close(os.open(path, os.O_WRONLY))
    return call


def create(path):
    def call():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(path)
    return call


def mknod(path):
    def call():
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.unlink(path)
    return call


def ioctl_tiocsti():
    # On /dev/null, never a terminal: if the ioctl is allowed the kernel answers ENOTTY.
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        syscall("ioctl", fd, TIOCSTI, b(b"x"))()
    finally:
        os.close(fd)


def read(path):
    def call():
        with open(path) as f:
            if not f.read(4096):
                raise EOFError
    return call


def outcome(fn):
    try:
        fn()
        return "ok"
    except EOFError:
        return "empty"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


b = ctypes.c_char_p
NONE = b"/nonexistent-agentos-probe"
ATTEMPTS = {
    # (attempt, expected outcome inside an agentos sandbox)
    "mount": (syscall("mount", b(b"none"), b(NONE), b(b"tmpfs"), 0, None), "EPERM"),
    "umount2": (syscall("umount2", b(NONE), 0), "EPERM"),
    "pivot_root": (syscall("pivot_root", b(NONE), b(NONE)), "EPERM"),
    "chroot": (syscall("chroot", b(NONE)), "EPERM"),
    "mount_setattr": (syscall("mount_setattr", -100, b(NONE), 0, None, 0), "EPERM"),
    "open_tree": (syscall("open_tree", -100, b(NONE), 0), "EPERM"),
    "fsopen": (syscall("fsopen", b(b"tmpfs"), 0), "EPERM"),
    "setns": (syscall("setns", -1, 0), "EPERM"),
    "clone with a new user namespace": (syscall("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), "EPERM"),
    "clone3": (syscall("clone3", None, 0), "ENOSYS"),
    "ptrace": (syscall("ptrace", 2, 1, 0, 0), "EPERM"),  # PTRACE_PEEKDATA on pid 1
    "process_vm_readv": (syscall("process_vm_readv", 1, None, 0, None, 0, 0), "EPERM"),
    "kcmp": (syscall("kcmp", 1, 1, 0, 0, 0), "EPERM"),
    "pidfd_getfd": (syscall("pidfd_getfd", -1, 0, 0), "EPERM"),
    "bpf": (syscall("bpf", -1, None, 0), "EPERM"),
    "perf_event_open": (syscall("perf_event_open", None, 0, -1, -1, 0), "EPERM"),
    "keyctl": (syscall("keyctl", -1, 0, 0, 0, 0), "EPERM"),
    "add_key": (syscall("add_key", b(b"nonexistent-type"), b(b"x"), None, 0, 0), "EPERM"),
    "reboot": (syscall("reboot", 0, 0, 0, None), "EPERM"),  # bad magic: never reboots
    "kexec_load": (syscall("kexec_load", 0, 0, None, 0xFFFFFFFF), "EPERM"),
    "init_module": (syscall("init_module", None, 0, b(b"")), "EPERM"),
    "finit_module": (syscall("finit_module", -1, b(b""), 0), "EPERM"),
    "delete_module": (syscall("delete_module", b(b"nonexistent_agentos_module"), 0), "EPERM"),
    "swapon": (syscall("swapon", b(NONE), 0), "EPERM"),
    "syslog": (syscall("syslog", 10, None, 0), "EPERM"),  # SYSLOG_ACTION_SIZE_BUFFER
    "acct": (syscall("acct", b(NONE)), "EPERM"),
    "settimeofday": (syscall("settimeofday", None, None), "EPERM"),
    "clock_settime": (syscall("clock_settime", 0xFFFF, None), "EPERM"),
    "open_by_handle_at": (syscall("open_by_handle_at", -1, None, 0), "EPERM"),
    "io_uring_setup": (syscall("io_uring_setup", 0, None), "EPERM"),
    "userfaultfd": (syscall("userfaultfd", 0), "EPERM"),
    "TIOCSTI": (ioctl_tiocsti, "EPERM"),
    "write /proc/sys": (open_for_writing("/proc/sys/kernel/core_pattern"), ("EROFS", "EACCES")),
    "write /proc/sysrq-trigger": (open_for_writing("/proc/sysrq-trigger"), ("EROFS", "EACCES", "ENOENT")),
    "create in /usr": (create("/usr/escape-probe"), ("EROFS", "EACCES")),
    "create in /etc": (create("/etc/escape-probe"), ("EROFS", "EACCES")),
    "create in /": (create("/escape-probe"), ("EROFS", "EACCES")),
    "read /proc/sched_debug": (read("/proc/sched_debug"), ("empty", "ENOENT")),
    "read /proc/kcore": (read("/proc/kcore"), ("empty", "ENOENT", "EPERM", "EACCES")),
    "mknod": (mknod("/tmp/escape-probe-null"), "EPERM"),
    "host disk": (read("/dev/vda"), "ENOENT"),
    "vsock to the hypervisor": (lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close(), "EPERM"),
    # last: if allowed, these move this process into new namespaces
    "unshare user": (syscall("unshare", CLONE_NEWUSER), "EPERM"),
    "unshare mount": (syscall("unshare", CLONE_NEWNS), "EPERM"),
}

ready()
outcomes = {name: outcome(fn) for name, (fn, _) in ATTEMPTS.items()}
expected = {name: want for name, (_, want) in ATTEMPTS.items()}
escaped = sorted(name for name, got in outcomes.items()
                 if got != expected[name] and got not in (expected[name] if isinstance(expected[name], tuple) else ()))
emit(agent="escape_attempts", outcomes=outcomes, expected=expected, escaped=escaped)
