# prctl(2) and capabilities (included by linux.pyx).

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

