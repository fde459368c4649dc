# Mounts (included by linux.pyx): mount, umount2, pivot_root, mount_setattr.

MS_RDONLY = system.MS_RDONLY
MS_NOSUID = system.MS_NOSUID
MS_NODEV = system.MS_NODEV
MS_NOEXEC = system.MS_NOEXEC
MS_REMOUNT = system.MS_REMOUNT
MS_BIND = system.MS_BIND
MS_MOVE = system.MS_MOVE
MS_REC = system.MS_REC
MS_PRIVATE = system.MS_PRIVATE
MS_SLAVE = system.MS_SLAVE
MNT_DETACH = system.MNT_DETACH

cdef enum:
    _MOUNT_ATTR_IDMAP = 0x00100000  # the view's idmapped binds set it in C

#: mount_setattr(2) attributes.
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR_IDMAP = _MOUNT_ATTR_IDMAP


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
        r = system.mount(sp, tp, fp, flags, dp)
    if r != 0:
        raise _error(errno, f"mount {source or fstype} on {target}")


def umount2(target, int flags=0):
    """umount2(2)."""
    cdef bytes t = _path(target, "umount2")
    cdef const char *tp = t
    cdef int r
    with nogil:
        r = system.umount2(tp, flags)
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

