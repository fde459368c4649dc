# seccomp (included by linux.pyx): the filter, and the numbers a filter is written with.

SECCOMP_RET_KILL_PROCESS = system.SECCOMP_RET_KILL_PROCESS
SECCOMP_RET_ERRNO = system.SECCOMP_RET_ERRNO
SECCOMP_RET_ALLOW = system.SECCOMP_RET_ALLOW

TIOCSTI = system.TIOCSTI
TIOCLINUX = system.TIOCLINUX

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

