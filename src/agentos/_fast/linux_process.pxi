# Processes and their namespaces (included by linux.pyx): clone3, unshare, setns, pidfds,
# close_range, and what a new UTS or network namespace needs (its hostname, loopback up).

CLONE_NEWNS = system.CLONE_NEWNS
CLONE_NEWUTS = system.CLONE_NEWUTS
CLONE_NEWIPC = system.CLONE_NEWIPC
CLONE_NEWUSER = system.CLONE_NEWUSER
CLONE_NEWPID = system.CLONE_NEWPID
CLONE_NEWNET = system.CLONE_NEWNET
CLONE_NEWCGROUP = system.CLONE_NEWCGROUP
CLONE_PARENT = system.CLONE_PARENT


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
    args.exit_signal = 0 if flags & system.CLONE_PARENT else SIGCHLD
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
    if system.unshare(flags) != 0:
        raise _error(errno, f"unshare(flags={flags:#x})")


def setns(int fd, int nstype=0):
    """setns(2): join the namespace that ``fd`` refers to."""
    if system.setns(fd, nstype) != 0:
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


def sethostname(name):
    """sethostname(2) in this process's UTS namespace."""
    cdef bytes raw = name.encode() if isinstance(name, str) else bytes(name)
    if system.sethostname(raw, len(raw)) != 0:
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

