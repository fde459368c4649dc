# cython: language_level=3, boundscheck=False, wraparound=False
"""Raw Linux syscalls for the sandbox: namespaces, mounts, prctl, pidfds, seccomp, Landlock.

This module has no pure-Python twin and no fallback: every function either does
exactly what it says or raises ``OSError(errno, "<what it was doing>: <strerror>")``.
Policy (which mounts, which filter, which order) lives in ``agentos.sandbox``; this
layer only validates its arguments and talks to the kernel.
"""
from libc.errno cimport errno, EINVAL
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memset, strncpy, memcpy
from libc.stdlib cimport malloc, free

import os as _os


cdef extern from "Python.h":
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()


cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)
    int c_sethostname "sethostname"(const char *name, size_t len)
    int close(int fd)
    int setresuid(unsigned int ruid, unsigned int euid, unsigned int suid)
    int setresgid(unsigned int rgid, unsigned int egid, unsigned int sgid)


cdef extern from "<grp.h>" nogil:
    int setgroups(size_t size, const unsigned int *list)


cdef extern from "<signal.h>" nogil:
    enum: SIGCHLD


cdef extern from "<sched.h>" nogil:
    enum:
        C_CLONE_NEWNS "CLONE_NEWNS"
        C_CLONE_NEWUTS "CLONE_NEWUTS"
        C_CLONE_NEWIPC "CLONE_NEWIPC"
        C_CLONE_NEWUSER "CLONE_NEWUSER"
        C_CLONE_NEWPID "CLONE_NEWPID"
        C_CLONE_NEWNET "CLONE_NEWNET"
        C_CLONE_NEWCGROUP "CLONE_NEWCGROUP"
        C_CLONE_PARENT "CLONE_PARENT"
    int c_unshare "unshare"(int flags)
    int c_setns "setns"(int fd, int nstype)


cdef extern from "<sys/mount.h>" nogil:
    enum:
        C_MS_RDONLY "MS_RDONLY"
        C_MS_NOSUID "MS_NOSUID"
        C_MS_NODEV "MS_NODEV"
        C_MS_NOEXEC "MS_NOEXEC"
        C_MS_REMOUNT "MS_REMOUNT"
        C_MS_BIND "MS_BIND"
        C_MS_MOVE "MS_MOVE"
        C_MS_REC "MS_REC"
        C_MS_PRIVATE "MS_PRIVATE"
        C_MS_SLAVE "MS_SLAVE"
        C_MS_SHARED "MS_SHARED"
        C_MS_STRICTATIME "MS_STRICTATIME"
        C_MNT_DETACH "MNT_DETACH"
        C_MNT_FORCE "MNT_FORCE"
    int c_mount "mount"(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data)
    int c_umount2 "umount2"(const char *target, int flags)


cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_PDEATHSIG
        PR_GET_PDEATHSIG
        PR_SET_NO_NEW_PRIVS
        PR_GET_NO_NEW_PRIVS
        PR_SET_CHILD_SUBREAPER
        PR_GET_CHILD_SUBREAPER
        PR_CAPBSET_READ
        PR_CAPBSET_DROP
        PR_CAP_AMBIENT
        PR_CAP_AMBIENT_CLEAR_ALL
        PR_SET_DUMPABLE
        PR_GET_SECCOMP
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)


cdef extern from "<sys/ioctl.h>" nogil:
    enum:
        C_TIOCSTI "TIOCSTI"
        C_TIOCLINUX "TIOCLINUX"
    int ioctl(int fd, unsigned long request, ...)


cdef extern from "<sys/socket.h>" nogil:
    enum:
        AF_INET
        SOCK_DGRAM
        SOCK_CLOEXEC
    int socket(int domain, int type, int protocol)


cdef extern from "<net/if.h>" nogil:
    enum:
        IFF_UP
        IFF_RUNNING
        IFNAMSIZ
    struct ifreq:
        char ifr_name[16]
        short ifr_flags


cdef extern from "<sys/ioctl.h>" nogil:
    enum:
        SIOCGIFFLAGS
        SIOCSIFFLAGS


cdef extern from "<fcntl.h>" nogil:
    enum:
        AT_FDCWD
        AT_RECURSIVE


cdef extern from "<linux/seccomp.h>" nogil:
    enum:
        SECCOMP_SET_MODE_FILTER
        SECCOMP_GET_ACTION_AVAIL
        SECCOMP_FILTER_FLAG_TSYNC
        C_SECCOMP_RET_KILL_PROCESS "SECCOMP_RET_KILL_PROCESS"
        C_SECCOMP_RET_ERRNO "SECCOMP_RET_ERRNO"
        C_SECCOMP_RET_ALLOW "SECCOMP_RET_ALLOW"
        C_SECCOMP_RET_DATA "SECCOMP_RET_DATA"


cdef extern from "includes/sandbox_compat.h" nogil:
    enum:
        __NR_pidfd_send_signal
        __NR_pidfd_open
        __NR_open_tree
        __NR_move_mount
        __NR_clone3
        __NR_close_range
        __NR_mount_setattr
        __NR_landlock_create_ruleset
        __NR_landlock_add_rule
        __NR_landlock_restrict_self
        __NR_pivot_root
        __NR_seccomp
        __NR_capset
    unsigned int AO_AUDIT_ARCH
    const char *AO_ARCH_NAME
    ctypedef struct ao_clone_args:
        uint64_t flags
        uint64_t pidfd
        uint64_t exit_signal
        uint64_t cgroup
    ctypedef struct ao_mount_attr:
        uint64_t attr_set
        uint64_t attr_clr
        uint64_t propagation
        uint64_t userns_fd
    ctypedef struct ao_landlock_ruleset_attr:
        uint64_t handled_access_fs
        uint64_t handled_access_net
        uint64_t scoped
    ctypedef struct ao_landlock_path_beneath_attr:
        uint64_t allowed_access
        int parent_fd
    ctypedef struct ao_landlock_net_port_attr:
        uint64_t allowed_access
        uint64_t port
    ctypedef struct ao_sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    ctypedef struct ao_sock_fprog:
        unsigned short len
        ao_sock_filter *filter
    ctypedef struct ao_cap_header:
        uint32_t version
        int pid
    ctypedef struct ao_cap_data:
        uint32_t effective
        uint32_t permitted
        uint32_t inheritable
    enum:
        AO_CLONE_PIDFD
        AO_CLONE_INTO_CGROUP
        AO_LANDLOCK_CREATE_RULESET_VERSION
        AO_LANDLOCK_RULE_PATH_BENEATH
        AO_LANDLOCK_RULE_NET_PORT
        AO_CAPABILITY_VERSION_3


cdef extern from "includes/syscall_table.h" nogil:
    ctypedef struct ao_syscall_entry:
        const char *name
        long nr
    const ao_syscall_entry ao_syscall_table[]


# --- constants (the sandbox's policy modules name these, never raw numbers) ---

CLONE_NEWNS = C_CLONE_NEWNS
CLONE_NEWUTS = C_CLONE_NEWUTS
CLONE_NEWIPC = C_CLONE_NEWIPC
CLONE_NEWUSER = C_CLONE_NEWUSER
CLONE_NEWPID = C_CLONE_NEWPID
CLONE_NEWNET = C_CLONE_NEWNET
CLONE_NEWCGROUP = C_CLONE_NEWCGROUP
CLONE_PARENT = C_CLONE_PARENT

MS_RDONLY = C_MS_RDONLY
MS_NOSUID = C_MS_NOSUID
MS_NODEV = C_MS_NODEV
MS_NOEXEC = C_MS_NOEXEC
MS_REMOUNT = C_MS_REMOUNT
MS_BIND = C_MS_BIND
MS_MOVE = C_MS_MOVE
MS_REC = C_MS_REC
MS_PRIVATE = C_MS_PRIVATE
MS_SLAVE = C_MS_SLAVE
MNT_DETACH = C_MNT_DETACH

#: mount_setattr(2) attributes.
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR_IDMAP = 0x00100000

SECCOMP_RET_KILL_PROCESS = C_SECCOMP_RET_KILL_PROCESS
SECCOMP_RET_ERRNO = C_SECCOMP_RET_ERRNO
SECCOMP_RET_ALLOW = C_SECCOMP_RET_ALLOW

TIOCSTI = C_TIOCSTI
TIOCLINUX = C_TIOCLINUX

#: AUDIT_ARCH_* of the architecture this module was built for (0 if unsupported).
AUDIT_ARCH = AO_AUDIT_ARCH
ARCH = AO_ARCH_NAME.decode()


def _syscall_numbers():
    cdef int i = 0
    table = {}
    while ao_syscall_table[i].name != NULL:
        table[ao_syscall_table[i].name.decode()] = ao_syscall_table[i].nr
        i += 1
    return table


#: Syscall name -> number on this architecture (only names the seccomp policy uses).
SYSCALL_NUMBERS = _syscall_numbers()


# --- errors ---

cdef inline object _error(int err, str what):
    return OSError(err, f"{what}: {_os.strerror(err)}")


cdef inline bytes _path(object path, str what):
    if path is None:
        raise TypeError(f"{what}: path must not be None")
    cdef bytes raw = _os.fsencode(path)
    if b"\0" in raw:
        raise ValueError(f"{what}: path contains a NUL byte")
    return raw


cdef inline bytes _optional(object value):
    if value is None:
        return None
    cdef bytes raw = _os.fsencode(value)
    if b"\0" in raw:
        raise ValueError("embedded NUL byte")
    return raw


# --- processes ---

def clone3(unsigned long long flags, int cgroup_fd=-1):
    """Fork this process into the namespaces named by ``flags``; return ``(pid, pidfd)``.

    In the child the result is ``(0, -1)``. Like ``os.fork`` it runs the
    interpreter's fork hooks (``os.register_at_fork``), so Python keeps working in
    the child; unlike ``os.fork`` the child is born inside its new namespaces (so it
    is pid 1 of a new pid namespace) and the parent gets a pidfd atomically.
    With ``PARENT`` in ``flags`` the child's parent is this process's parent.
    Only call it from a single-threaded process: the raw syscall skips the C
    library's fork handlers.
    """
    cdef ao_clone_args args
    cdef int pidfd = -1
    cdef long pid
    cdef int err
    memset(&args, 0, sizeof(args))
    args.flags = flags | AO_CLONE_PIDFD
    args.pidfd = <uint64_t><uintptr_t>&pidfd
    # The kernel refuses an exit signal with CLONE_PARENT: the child inherits ours.
    args.exit_signal = 0 if flags & C_CLONE_PARENT else SIGCHLD
    if cgroup_fd >= 0:
        args.flags |= AO_CLONE_INTO_CGROUP
        args.cgroup = <uint64_t>cgroup_fd
    PyOS_BeforeFork()
    pid = syscall(__NR_clone3, &args, sizeof(args))
    if pid == 0:
        PyOS_AfterFork_Child()
        return 0, -1
    err = errno
    PyOS_AfterFork_Parent()
    if pid < 0:
        raise _error(err, f"clone3(flags={flags:#x})")
    return pid, pidfd


def unshare(int flags):
    """unshare(2): move this process into new namespaces."""
    if c_unshare(flags) != 0:
        raise _error(errno, f"unshare(flags={flags:#x})")


def setns(int fd, int nstype=0):
    """setns(2): join the namespace that ``fd`` refers to."""
    if c_setns(fd, nstype) != 0:
        raise _error(errno, f"setns(fd={fd})")


def pidfd_open(int pid, unsigned int flags=0):
    """pidfd_open(2): a file descriptor that refers to process ``pid``."""
    cdef long fd = syscall(__NR_pidfd_open, pid, flags)
    if fd < 0:
        raise _error(errno, f"pidfd_open({pid})")
    return <int>fd


def pidfd_send_signal(int pidfd, int sig):
    """pidfd_send_signal(2): signal the process ``pidfd`` refers to (no pid reuse race)."""
    if syscall(__NR_pidfd_send_signal, pidfd, sig, NULL, 0) != 0:
        raise _error(errno, f"pidfd_send_signal(sig={sig})")


def close_range(unsigned int first, unsigned int last=0xFFFFFFFF, unsigned int flags=0):
    """close_range(2): close (or with CLOSE_RANGE_CLOEXEC, mark) every fd in [first, last]."""
    if syscall(__NR_close_range, first, last, flags) != 0:
        raise _error(errno, f"close_range({first}, {last})")


# --- prctl ---

def set_pdeathsig(int sig):
    """Have the kernel send ``sig`` to this process when its parent thread dies."""
    if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_SET_PDEATHSIG)")


def get_pdeathsig():
    """The parent-death signal of this process (0 if none)."""
    cdef int sig = 0
    if prctl(PR_GET_PDEATHSIG, <unsigned long><uintptr_t>&sig, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_GET_PDEATHSIG)")
    return sig


def set_no_new_privs():
    """Make execve never grant privileges again (setuid bits, file capabilities)."""
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_SET_NO_NEW_PRIVS)")


def get_no_new_privs():
    """Whether no_new_privs is set on this process."""
    cdef int r = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
    if r < 0:
        raise _error(errno, "prctl(PR_GET_NO_NEW_PRIVS)")
    return bool(r)


def set_child_subreaper(bint on=True):
    """Adopt orphaned descendants (so they can be reaped and killed with their ancestor)."""
    if prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_SET_CHILD_SUBREAPER)")


def set_dumpable(bint on):
    """prctl(PR_SET_DUMPABLE): a non-dumpable process cannot be ptraced or core-dumped."""
    if prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_SET_DUMPABLE)")


def drop_capabilities(bint bounding=True, long uid=-1, long gid=-1):
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets.

    After this even uid 0 holds no capability, and (with no_new_privs) execve
    cannot give any back. With ``uid``/``gid`` (>= 0) the process first becomes
    that user, with no supplementary groups, and stays dumpable so that its own
    ``/proc/self`` files remain its own. ``bounding=False`` leaves the bounding
    set alone, for a caller without CAP_SETPCAP (it holds no capability anyway).
    """
    cdef int cap = 0
    cdef ao_cap_header header
    cdef ao_cap_data data[2]
    if bounding:
        while prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0:
            if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise _error(errno, f"prctl(PR_CAPBSET_DROP, {cap})")
            cap += 1
    if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise _error(errno, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if gid >= 0:
        if setgroups(0, NULL) != 0:
            raise _error(errno, "setgroups([])")
        if setresgid(<unsigned int>gid, <unsigned int>gid, <unsigned int>gid) != 0:
            raise _error(errno, f"setresgid({gid})")
    if uid >= 0:
        if setresuid(<unsigned int>uid, <unsigned int>uid, <unsigned int>uid) != 0:
            raise _error(errno, f"setresuid({uid})")
        # Changing uid made the process non-dumpable: its /proc files would belong to root.
        if prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
            raise _error(errno, "prctl(PR_SET_DUMPABLE)")
    header.version = AO_CAPABILITY_VERSION_3
    header.pid = 0
    memset(data, 0, sizeof(data))
    if syscall(__NR_capset, &header, data) != 0:
        raise _error(errno, "capset(0)")


# --- mounts and the file-system view ---

def mount(source, target, fstype, unsigned long flags=0, data=None):
    """mount(2). ``source``, ``fstype`` and ``data`` may be None."""
    cdef bytes t = _path(target, "mount")
    cdef bytes s = _optional(source)
    cdef bytes f = _optional(fstype)
    cdef bytes d = _optional(data)
    cdef const char *sp = NULL
    cdef const char *fp = NULL
    cdef const char *dp = NULL
    if s is not None:
        sp = s
    if f is not None:
        fp = f
    if d is not None:
        dp = d
    cdef const char *tp = t
    cdef int r
    with nogil:
        r = c_mount(sp, tp, fp, flags, dp)
    if r != 0:
        raise _error(errno, f"mount {source or fstype} on {target}")


def umount2(target, int flags=0):
    """umount2(2)."""
    cdef bytes t = _path(target, "umount2")
    cdef const char *tp = t
    cdef int r
    with nogil:
        r = c_umount2(tp, flags)
    if r != 0:
        raise _error(errno, f"umount {target}")


def pivot_root(new_root, put_old):
    """pivot_root(2): make ``new_root`` the root mount, moving the old one to ``put_old``."""
    cdef bytes n = _path(new_root, "pivot_root")
    cdef bytes o = _path(put_old, "pivot_root")
    if syscall(__NR_pivot_root, <const char *>n, <const char *>o) != 0:
        raise _error(errno, f"pivot_root({new_root}, {put_old})")


def mount_setattr(path, unsigned long long attr_set, unsigned long long attr_clr=0,
                  bint recursive=True, int dirfd=AT_FDCWD):
    """mount_setattr(2): change attributes (e.g. read-only) of a mount, or of a whole tree."""
    cdef bytes p = _path(path, "mount_setattr")
    cdef ao_mount_attr attr
    memset(&attr, 0, sizeof(attr))
    attr.attr_set = attr_set
    attr.attr_clr = attr_clr
    cdef unsigned int flags = AT_RECURSIVE if recursive else 0
    if syscall(__NR_mount_setattr, dirfd, <const char *>p, flags, &attr, sizeof(attr)) != 0:
        raise _error(errno, f"mount_setattr {path}")


def sethostname(name):
    """sethostname(2) in this process's UTS namespace."""
    cdef bytes raw = name.encode() if isinstance(name, str) else bytes(name)
    if c_sethostname(raw, len(raw)) != 0:
        raise _error(errno, f"sethostname({name!r})")


def set_link_up(name="lo"):
    """Bring a network interface up in this process's network namespace (SIOCSIFFLAGS)."""
    cdef bytes raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name too long: {name!r}")
    cdef ifreq req
    cdef int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    cdef int err
    if fd < 0:
        raise _error(errno, "socket for interface flags")
    memset(&req, 0, sizeof(req))
    strncpy(req.ifr_name, raw, IFNAMSIZ - 1)
    if ioctl(fd, SIOCGIFFLAGS, &req) != 0:
        err = errno
        close(fd)
        raise _error(err, f"read flags of {name}")
    req.ifr_flags |= IFF_UP | IFF_RUNNING
    if ioctl(fd, SIOCSIFFLAGS, &req) != 0:
        err = errno
        close(fd)
        raise _error(err, f"bring {name} up")
    close(fd)


# --- seccomp ---

def seccomp_set_filter(bytes program, unsigned int flags=0):
    """Install a classic-BPF seccomp filter (``program``: packed ``struct sock_filter``s).

    The caller must have set no_new_privs (or hold CAP_SYS_ADMIN).
    """
    cdef Py_ssize_t n = len(program)
    if n == 0 or n % sizeof(ao_sock_filter) != 0:
        raise ValueError(f"seccomp program of {n} bytes is not a whole number of instructions")
    if n // sizeof(ao_sock_filter) > 4096:
        raise ValueError("seccomp program longer than 4096 instructions")
    cdef ao_sock_filter *insns = <ao_sock_filter *>malloc(n)
    if insns == NULL:
        raise MemoryError()
    memcpy(insns, <const char *>program, n)
    cdef ao_sock_fprog prog
    prog.len = <unsigned short>(n // sizeof(ao_sock_filter))
    prog.filter = insns
    cdef long r = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog)
    cdef int err = errno
    free(insns)
    if r != 0:
        raise _error(err, "seccomp(SECCOMP_SET_MODE_FILTER)")


def seccomp_action_available(unsigned int action):
    """Whether the kernel supports seccomp filters returning ``action``."""
    cdef uint32_t a = action
    if syscall(__NR_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &a) != 0:
        raise _error(errno, f"seccomp(SECCOMP_GET_ACTION_AVAIL, {action:#x})")
    return True


def seccomp_mode():
    """prctl(PR_GET_SECCOMP): 0 none, 2 filter (1, strict mode, kills the caller)."""
    cdef int r = prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    if r < 0:
        raise _error(errno, "prctl(PR_GET_SECCOMP)")
    return r


# --- Landlock ---

def landlock_abi():
    """The Landlock ABI version of the running kernel; OSError if Landlock is off."""
    cdef long r = syscall(__NR_landlock_create_ruleset, NULL, 0,
                          AO_LANDLOCK_CREATE_RULESET_VERSION)
    if r < 0:
        raise _error(errno, "landlock_create_ruleset(VERSION)")
    return <int>r


def landlock_create_ruleset(unsigned long long handled_fs, unsigned long long handled_net=0,
                            unsigned long long scoped=0):
    """landlock_create_ruleset(2): a ruleset fd handling these access rights."""
    cdef ao_landlock_ruleset_attr attr
    memset(&attr, 0, sizeof(attr))
    attr.handled_access_fs = handled_fs
    attr.handled_access_net = handled_net
    attr.scoped = scoped
    # Older kernels know a shorter struct; only send the fields actually used.
    cdef size_t size = sizeof(attr)
    if scoped == 0:
        size = 16 if handled_net else 8
    cdef long fd = syscall(__NR_landlock_create_ruleset, &attr, size, 0)
    if fd < 0:
        raise _error(errno, "landlock_create_ruleset")
    return <int>fd


def landlock_add_path_rule(int ruleset_fd, int parent_fd, unsigned long long allowed):
    """Allow ``allowed`` file-system rights beneath the file or directory ``parent_fd``."""
    cdef ao_landlock_path_beneath_attr attr
    attr.allowed_access = allowed
    attr.parent_fd = parent_fd
    if syscall(__NR_landlock_add_rule, ruleset_fd, AO_LANDLOCK_RULE_PATH_BENEATH, &attr, 0) != 0:
        raise _error(errno, "landlock_add_rule(PATH_BENEATH)")


def landlock_add_port_rule(int ruleset_fd, unsigned long long port, unsigned long long allowed):
    """Allow ``allowed`` network rights (bind/connect TCP) on ``port``."""
    cdef ao_landlock_net_port_attr attr
    attr.allowed_access = allowed
    attr.port = port
    if syscall(__NR_landlock_add_rule, ruleset_fd, AO_LANDLOCK_RULE_NET_PORT, &attr, 0) != 0:
        raise _error(errno, f"landlock_add_rule(NET_PORT {port})")


def landlock_restrict_self(int ruleset_fd, unsigned int flags=0):
    """Enforce the ruleset on this thread (and everything it later forks or execs)."""
    if syscall(__NR_landlock_restrict_self, ruleset_fd, flags) != 0:
        raise _error(errno, "landlock_restrict_self")


# --- the file-system view: a small program of mount steps, run in the child ---

cdef extern from "<sys/stat.h>" nogil:
    int mkdirat(int dirfd, const char *path, unsigned int mode)
    int mknodat(int dirfd, const char *path, unsigned int mode, unsigned long dev)
    enum:
        S_IFREG

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_CLOEXEC
        O_PATH
        O_DIRECTORY
        O_RDONLY

cdef extern from "<unistd.h>" nogil:
    int symlinkat(const char *target, int dirfd, const char *linkpath)
    int chdir(const char *path)
    int fchdir(int fd)

cdef extern from "<stdio.h>" nogil:
    int snprintf(char *buf, size_t size, const char *fmt, ...)

cdef extern from "<string.h>" nogil:
    size_t strlen(const char *s)

cdef extern from "<errno.h>" nogil:
    enum:
        EEXIST
        ENOENT

cdef extern from "<fcntl.h>" nogil:
    enum:
        AT_EMPTY_PATH

cdef extern from "includes/sandbox_compat.h" nogil:
    enum:
        __NR_openat2
    ctypedef struct ao_open_how:
        uint64_t flags
        uint64_t mode
        uint64_t resolve
    enum:
        AO_RESOLVE_NO_MAGICLINKS
        AO_RESOLVE_NO_SYMLINKS
        AO_OPEN_TREE_CLONE
        AO_MOVE_MOUNT_F_EMPTY_PATH
        AO_MOVE_MOUNT_T_EMPTY_PATH

cdef enum:
    _MKDIRS = 1
    _MOUNT = 3
    _SYMLINK = 4
    _SETATTR = 5
    _PIVOT = 6
    _IDMAP = 7
    _BIND = 8
    _OPTIONAL = 1
    _RECURSIVE = 2
    _TARGET_DIR = 4
    _TARGET_FILE = 8
    _HEADER = 18  # opcode u8, flags u8, n1 u64, n2 u64 (little endian), then 5 strings
    _NULL_STRING = 0xFF  # a string's first byte: this argument is NULL
    _MAKE_NOTHING = 0
    _MAKE_DIR = 1
    _MAKE_FILE = 2
    _MOUNT_ATTR_IDMAP = 0x00100000

#: Opcodes of a view program (see ``agentos.sandbox.mounts.view_program``).
VIEW_MKDIRS = _MKDIRS
VIEW_MOUNT = _MOUNT
VIEW_SYMLINK = _SYMLINK
VIEW_SETATTR = _SETATTR
VIEW_PIVOT = _PIVOT
VIEW_IDMAP = _IDMAP
VIEW_BIND = _BIND
#: Flags of a view instruction.
VIEW_OPTIONAL = _OPTIONAL  # a missing path skips the instruction (a /proc file this kernel lacks)
VIEW_RECURSIVE = _RECURSIVE  # mount_setattr on the whole tree; a bind with its submounts
VIEW_TARGET_DIR = _TARGET_DIR  # a mount or bind makes its missing target: a directory (and parents)
VIEW_TARGET_FILE = _TARGET_FILE  # ... or an empty file
VIEW_HEADER = _HEADER
VIEW_NULL = _NULL_STRING


class StepError(OSError):
    """A step of a setup program failed; ``step`` names it (e.g. "mount /usr")."""

    def __init__(self, err, step, path):
        super().__init__(err, _os.strerror(err), path)
        self.step = step


cdef int _open_real(int dirfd, const char *path, uint64_t flags) noexcept nogil:
    """openat2(2) that follows no symlink anywhere in ``path``: a descriptor, or -ELOOP at
    the first symlink (-errno for any other failure)."""
    cdef ao_open_how how
    memset(&how, 0, sizeof(how))
    how.flags = flags | O_CLOEXEC
    how.resolve = AO_RESOLVE_NO_SYMLINKS | AO_RESOLVE_NO_MAGICLINKS
    cdef int fd = <int>syscall(__NR_openat2, dirfd, path, &how, sizeof(how))
    return fd if fd >= 0 else -errno


cdef int _failed(int fd) noexcept nogil:
    """-errno (why the call just made failed), after closing ``fd``."""
    cdef int err = errno
    close(fd)
    return -err


cdef int _reach(char *path, int make) noexcept nogil:
    """An O_PATH descriptor of the absolute ``path`` (-errno on failure), which is first made
    (a directory, or an empty file, and its missing parents) when ``make`` says so.

    No symlink is followed, in the path or in what is made: every path of a view is a real
    path, so one that has a symlink now was changed after it was checked, and fails (ELOOP)
    instead of leading somewhere else. A missing part is made in the descriptor of its
    parent (reached the same way), never through a path that could change meanwhile.
    ``path`` is modified while walking, and restored.
    """
    cdef int fd = _open_real(AT_FDCWD, path, O_PATH)
    if fd != -ENOENT or make == _MAKE_NOTHING:
        return fd
    cdef char *end = path + strlen(path)
    while end > path + 1 and (end - 1)[0] == b'/':
        end -= 1  # trailing slashes name the same directory
    cdef char saved = end[0]
    end[0] = 0
    cdef char *name = end
    while name > path and (name - 1)[0] != b'/':
        name -= 1
    cdef int parent
    if name - 1 <= path:
        parent = _open_real(AT_FDCWD, b"/", O_PATH | O_DIRECTORY)
    else:
        (name - 1)[0] = 0
        parent = _reach(path, _MAKE_DIR)
        (name - 1)[0] = b'/'
    fd = parent
    if parent >= 0:
        if make == _MAKE_FILE:
            fd = 0 if mknodat(parent, name, S_IFREG | 0o644, 0) == 0 or errno == EEXIST else -errno
        else:
            fd = 0 if mkdirat(parent, name, 0o755) == 0 or errno == EEXIST else -errno
        if fd == 0:
            fd = _open_real(parent, name, O_PATH)
        close(parent)
    end[0] = saved
    return fd


cdef int _symlink(const char *target, char *link) noexcept nogil:
    """Make the symlink ``link`` -> ``target`` (its directory made first, as ``_reach`` does)."""
    cdef char *slash = link + strlen(link)
    while slash > link and slash[0] != b'/':
        slash -= 1
    cdef int parent
    if slash == link:
        parent = _open_real(AT_FDCWD, b"/", O_PATH | O_DIRECTORY)
    else:
        slash[0] = 0
        parent = _reach(link, _MAKE_DIR)
        slash[0] = b'/'
    if parent < 0:
        return parent
    if symlinkat(target, parent, slash + 1) != 0:
        return _failed(parent)
    close(parent)
    return 0


cdef int _mount_on(const char *source, char *target, const char *fstype, unsigned long flags,
                   const void *data, int make) noexcept nogil:
    """mount(2) on the directory ``target`` reached (or made) without a symlink: through the
    descriptor that reached it (its /proc magic link leads to exactly that directory)."""
    cdef char where[64]
    cdef int fd = _reach(target, make)
    if fd < 0:
        return fd
    snprintf(where, sizeof(where), b"/proc/self/fd/%d", fd)
    if c_mount(source, where, fstype, flags, data) != 0:
        return _failed(fd)
    close(fd)
    return 0


cdef int _setattr(char *path, uint64_t set_, uint64_t clear, bint recursive) noexcept nogil:
    cdef ao_mount_attr attr
    cdef int fd = _reach(path, _MAKE_NOTHING)
    if fd < 0:
        return fd
    memset(&attr, 0, sizeof(attr))
    attr.attr_set = set_
    attr.attr_clr = clear
    if syscall(__NR_mount_setattr, fd, b"", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
               &attr, sizeof(attr)) != 0:
        return _failed(fd)
    close(fd)
    return 0


cdef int _bind(const char *source, char *target, bint recursive, int userns, int make,
               bint *at_source) noexcept nogil:
    """Bind ``source`` (with its submounts if ``recursive``) on ``target`` (made as ``make``
    says if missing), idmapped through the user namespace ``userns`` unless it is -1.

    Neither path may hold a symlink: the source is opened without following one, its tree
    copied from that descriptor (open_tree), and attached to the target's descriptor
    (move_mount), so what is bound is what was opened, whatever the paths say a moment later.
    The copy is idmapped while it is detached, so nobody ever sees it otherwise.
    """
    cdef ao_mount_attr attr
    cdef int tree
    cdef int err
    cdef int fd = _open_real(AT_FDCWD, source, O_PATH)
    at_source[0] = True
    if fd < 0:
        return fd
    tree = <int>syscall(__NR_open_tree, fd, b"", AT_EMPTY_PATH | AO_OPEN_TREE_CLONE | O_CLOEXEC
                        | (AT_RECURSIVE if recursive else 0))
    if tree < 0:
        return _failed(fd)
    close(fd)
    if userns >= 0:
        memset(&attr, 0, sizeof(attr))
        attr.attr_set = _MOUNT_ATTR_IDMAP
        attr.userns_fd = <uint64_t>userns
        if syscall(__NR_mount_setattr, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) != 0:
            return _failed(tree)
    at_source[0] = False
    fd = _reach(target, make)
    if fd < 0:
        close(tree)
        return fd
    if syscall(__NR_move_mount, tree, b"", fd, b"", AO_MOVE_MOUNT_F_EMPTY_PATH | AO_MOVE_MOUNT_T_EMPTY_PATH) != 0:
        err = _failed(fd)
        close(tree)
        return err
    close(fd)
    close(tree)
    return 0


cdef int _pivot(char *root) noexcept nogil:
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it
    # takes the whole host tree out of this mount namespace.
    cdef int fd = _reach(root, _MAKE_NOTHING)
    if fd < 0:
        return fd
    if fchdir(fd) != 0:
        return _failed(fd)
    close(fd)
    if (syscall(__NR_pivot_root, b".", b".") != 0 or c_umount2(b".", C_MNT_DETACH) != 0
            or chdir(b"/") != 0):
        return -errno
    return 0


cdef char *_string(char **cursor, char *end, bint *null) noexcept nogil:
    cdef char *s = cursor[0]
    null[0] = (<unsigned char>s[0]) == _NULL_STRING
    cursor[0] = s + strlen(s) + 1
    return NULL if null[0] else s


def open_real(path, int flags=O_RDONLY):
    """Open ``path`` (close-on-exec) only if no component of it is a symlink: openat2(2) with
    RESOLVE_NO_SYMLINKS, ``OSError(ELOOP)`` at the first one. For a path checked as its
    real path, so that a symlink swapped in after the check cannot redirect the open."""
    cdef bytes p = _path(path, "open_real")
    cdef const char *pp = p
    cdef int fd
    with nogil:
        fd = _open_real(AT_FDCWD, pp, <uint64_t>flags)
    if fd < 0:
        raise OSError(-fd, _os.strerror(-fd), path)
    return fd


def run_view(bytearray program, tuple userns_fds=()):
    """Run a view program (mkdirs, mount, symlink, mount_setattr, bind, pivot) in C.

    An idmapped bind names its user namespace by index into ``userns_fds``. No step
    follows a symlink anywhere in its paths (sources and targets are real paths; one that
    has a symlink was changed after it was checked): such a step fails with ELOOP.

    No Python object is touched between instructions, so a freshly forked child
    does not copy interpreter pages just to build its mounts. The first failing
    instruction raises ``StepError`` naming its step and the path that failed. ``program``
    is modified while paths are walked (hence a bytearray: pass a copy you own).
    """
    cdef char *p = program
    cdef char *end = p + len(program)
    cdef unsigned char op, flags
    cdef uint64_t n1, n2
    cdef char *step
    cdef char *a
    cdef char *b
    cdef char *c
    cdef char *d
    cdef char *where
    cdef bint null
    cdef bint at_source
    cdef int r
    cdef int err
    cdef int userns
    cdef int make
    while p < end:
        op = <unsigned char>p[0]
        flags = <unsigned char>p[1]
        memcpy(&n1, p + 2, 8)
        memcpy(&n2, p + 10, 8)
        p += _HEADER
        step = _string(&p, end, &null)
        a = _string(&p, end, &null)
        b = _string(&p, end, &null)
        c = _string(&p, end, &null)
        d = _string(&p, end, &null)
        userns = userns_fds[n1] if op == _IDMAP and n1 < <uint64_t>len(userns_fds) else -1
        at_source = False
        make = _MAKE_DIR if flags & _TARGET_DIR else (_MAKE_FILE if flags & _TARGET_FILE else _MAKE_NOTHING)
        with nogil:
            if op == _MKDIRS:
                r = _reach(a, _MAKE_DIR)
                if r >= 0:
                    close(r)
                    r = 0
            elif op == _MOUNT:
                r = _mount_on(a, b, c, <unsigned long>n1, d, make)
            elif op == _SYMLINK:
                r = _symlink(a, b)
            elif op == _SETATTR:
                r = _setattr(a, n1, n2, flags & _RECURSIVE)
            elif op == _PIVOT:
                r = _pivot(a)
            elif op == _BIND:
                r = _bind(a, b, flags & _RECURSIVE, -1, make, &at_source)
            elif op == _IDMAP:
                r = _bind(a, b, flags & _RECURSIVE, userns, make, &at_source) if userns >= 0 else -EINVAL
            else:
                r = -EINVAL  # unknown opcode
        if r != 0:
            err = -r
            if flags & _OPTIONAL and err == ENOENT:
                continue
            where = a if at_source or op not in (_MOUNT, _SYMLINK, _BIND, _IDMAP) else b
            raise StepError(err, step.decode(), _os.fsdecode(<bytes>where) if where != NULL else "")
