# cython: language_level=3, wraparound=False
"""Raw Linux calls for the sandbox: namespaces, mounts, prctl, pidfds, seccomp, Landlock.

This module has no pure-Python twin and no fallback: every function either does
exactly what it says or raises ``OSError(errno, "<what it was doing>: <strerror>")``.
Policy (which mounts, which filter, which order) lives in ``agentos.sandbox``; this
layer only validates its arguments and talks to the kernel. One module built from
one file per theme (``linux_*.pxi``), as asyncpg builds its protocol.
"""
from libc.errno cimport errno, EEXIST, EINVAL, ENOENT
from libc.stdint cimport uint32_t, uint64_t, uintptr_t
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memcpy, memset, strlen, strncpy

cimport agentos._fast.includes.system as system
from agentos._fast.includes.compat cimport *
from agentos._fast.includes.python cimport PyOS_AfterFork_Child, PyOS_AfterFork_Parent, PyOS_BeforeFork
from agentos._fast.includes.system cimport (
    syscall, close, chdir, fchdir, symlinkat, setresuid, setresgid, setgroups, mkdirat, mknodat, chmod,
    S_IFREG, O_RDONLY, O_CLOEXEC, O_PATH, O_DIRECTORY, AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE,
    SIGCHLD, socket, AF_INET, SOCK_DGRAM, SOCK_CLOEXEC, ioctl, SIOCGIFFLAGS, SIOCSIFFLAGS, ifreq,
    IFF_UP, IFF_RUNNING, IFNAMSIZ, prctl, PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_SET_NO_NEW_PRIVS,
    PR_GET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_DUMPABLE, PR_GET_SECCOMP, SECCOMP_SET_MODE_FILTER,
    SECCOMP_GET_ACTION_AVAIL)

import os as _os


# --- errors and arguments, shared by every theme ---

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


include "linux_process.pxi"
include "linux_prctl.pxi"
include "linux_mount.pxi"
include "linux_seccomp.pxi"
include "linux_landlock.pxi"
include "linux_view.pxi"
include "linux_holder.pxi"
