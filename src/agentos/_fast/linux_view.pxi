# The file-system view (included by linux.pyx): a small program of mount steps, run in C in
# the child.

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
VIEW_TARGET_FILE = _TARGET_FILE  # ... or an empty file (for mkdirs: it makes one, not a directory)
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


cdef int _make(char *path, int make, unsigned int mode) noexcept nogil:
    """Make ``path`` as ``_reach`` does (a directory, or an empty file), then give it ``mode``
    unless 0 (through the descriptor that reached it: no symlink is followed)."""
    cdef char where[64]
    cdef int fd = _reach(path, make)
    if fd < 0:
        return fd
    if mode != 0:
        snprintf(where, sizeof(where), b"/proc/self/fd/%d", fd)
        if chmod(where, mode) != 0:
            return _failed(fd)
    close(fd)
    return 0


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
    if system.mount(source, where, fstype, flags, data) != 0:
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

    Neither path may hold a symlink: the source is opened without following one, the target
    reached (made if need be) the same way, and then the source's tree is copied from its
    descriptor (open_tree) and attached to the target's (move_mount), so what is bound is what
    was opened, whatever the paths say a moment later. The copy is idmapped while it is
    detached, so nobody ever sees it otherwise.
    """
    cdef ao_mount_attr attr
    cdef int tree
    cdef int err
    cdef int target_fd
    cdef int fd = _open_real(AT_FDCWD, source, O_PATH)
    at_source[0] = True
    if fd < 0:
        return fd
    # The target before the copy: a copy closed unattached (a mask of a /proc file this kernel
    # lacks) is dissolved, which waits for an expedited RCU grace period (ms on a busy host).
    at_source[0] = False
    target_fd = _reach(target, make)
    if target_fd < 0:
        close(fd)
        return target_fd
    at_source[0] = True
    tree = <int>syscall(__NR_open_tree, fd, b"", AT_EMPTY_PATH | AO_OPEN_TREE_CLONE | O_CLOEXEC
                        | (AT_RECURSIVE if recursive else 0))
    if tree < 0:
        err = _failed(fd)
        close(target_fd)
        return err
    close(fd)
    if userns >= 0:
        memset(&attr, 0, sizeof(attr))
        attr.attr_set = _MOUNT_ATTR_IDMAP
        attr.userns_fd = <uint64_t>userns
        if syscall(__NR_mount_setattr, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) != 0:
            err = _failed(tree)
            close(target_fd)
            return err
    at_source[0] = False
    if syscall(__NR_move_mount, tree, b"", target_fd, b"",
               AO_MOVE_MOUNT_F_EMPTY_PATH | AO_MOVE_MOUNT_T_EMPTY_PATH) != 0:
        err = _failed(target_fd)
        close(tree)
        return err
    close(target_fd)
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
    if (syscall(__NR_pivot_root, b".", b".") != 0 or system.umount2(b".", system.MNT_DETACH) != 0
            or chdir(b"/") != 0):
        return -errno
    return 0


cdef struct _Instruction:
    unsigned char op
    unsigned char flags
    uint64_t n1
    uint64_t n2
    char *step
    char *a
    char *b
    char *c
    char *d


cdef bint _string(char **cursor, char *end, char **out) noexcept nogil:
    """Point ``out`` at the string at ``cursor`` (NULL if it says so) and move past its NUL;
    False if no NUL ends it before ``end``."""
    cdef char *s = cursor[0]
    cdef char *nul
    if s >= end:
        return False
    nul = <char *>memchr(s, 0, end - s)
    if nul == NULL:
        return False
    out[0] = NULL if (<unsigned char>s[0]) == _NULL_STRING else s
    cursor[0] = nul + 1
    return True


cdef bint _instruction(char **cursor, char *end, _Instruction *ins) noexcept nogil:
    """Decode the instruction at ``cursor`` and move past it; False if it is malformed: cut
    short, or missing a path its opcode needs (the steps would dereference it)."""
    cdef char *p = cursor[0]
    if end - p < _HEADER:
        return False
    ins.op = <unsigned char>p[0]
    ins.flags = <unsigned char>p[1]
    memcpy(&ins.n1, p + 2, 8)
    memcpy(&ins.n2, p + 10, 8)
    cursor[0] = p + _HEADER
    if not (_string(cursor, end, &ins.step) and _string(cursor, end, &ins.a)
            and _string(cursor, end, &ins.b) and _string(cursor, end, &ins.c)
            and _string(cursor, end, &ins.d)):
        return False
    if ins.step == NULL:
        return False
    if ins.op == _MOUNT:
        return ins.b != NULL
    if ins.op == _SYMLINK or ins.op == _BIND or ins.op == _IDMAP:
        return ins.a != NULL and ins.b != NULL
    if ins.op == _MKDIRS or ins.op == _SETATTR or ins.op == _PIVOT:
        return ins.a != NULL
    return True  # an unknown opcode fails as its step does, with EINVAL


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
    """Run a view program (mkdirs or an empty file with its mode, mount, symlink, mount_setattr,
    bind, pivot) in C.

    An idmapped bind names its user namespace by index into ``userns_fds``. No step
    follows a symlink anywhere in its paths (sources and targets are real paths; one that
    has a symlink was changed after it was checked): such a step fails with ELOOP.

    The whole program is decoded before its first step runs: a malformed one (an
    instruction cut short, a string without its NUL, a missing path) raises ValueError
    and changes nothing. No Python object is touched between instructions, so a freshly
    forked child does not copy interpreter pages just to build its mounts. The first
    failing instruction raises ``StepError`` naming its step and the path that failed.
    ``program`` is modified while paths are walked (hence a bytearray: pass a copy you own).
    """
    cdef char *start = program
    cdef char *end = start + len(program)
    cdef char *p = start
    cdef char *here
    cdef _Instruction ins
    cdef char *where
    cdef bint at_source
    cdef int r
    cdef int err
    cdef int userns
    cdef int make
    while p < end:
        here = p
        if not _instruction(&p, end, &ins):
            raise ValueError(f"view program: the instruction at byte {here - start} of "
                             f"{end - start} is malformed")
    p = start
    while _instruction(&p, end, &ins):  # each is whole (checked above); False at the end
        userns = userns_fds[ins.n1] if ins.op == _IDMAP and ins.n1 < <uint64_t>len(userns_fds) else -1
        at_source = False
        make = (_MAKE_DIR if ins.flags & _TARGET_DIR
                else (_MAKE_FILE if ins.flags & _TARGET_FILE else _MAKE_NOTHING))
        with nogil:
            if ins.op == _MKDIRS:
                r = _make(ins.a, _MAKE_FILE if ins.flags & _TARGET_FILE else _MAKE_DIR, <unsigned int>ins.n1)
            elif ins.op == _MOUNT:
                r = _mount_on(ins.a, ins.b, ins.c, <unsigned long>ins.n1, ins.d, make)
            elif ins.op == _SYMLINK:
                r = _symlink(ins.a, ins.b)
            elif ins.op == _SETATTR:
                r = _setattr(ins.a, ins.n1, ins.n2, ins.flags & _RECURSIVE)
            elif ins.op == _PIVOT:
                r = _pivot(ins.a)
            elif ins.op == _BIND:
                r = _bind(ins.a, ins.b, ins.flags & _RECURSIVE, -1, make, &at_source)
            elif ins.op == _IDMAP:
                r = (_bind(ins.a, ins.b, ins.flags & _RECURSIVE, userns, make, &at_source)
                     if userns >= 0 else -EINVAL)
            else:
                r = -EINVAL  # unknown opcode
        if r != 0:
            err = -r
            if ins.flags & _OPTIONAL and err == ENOENT:
                continue
            where = ins.a if at_source or ins.op not in (_MOUNT, _SYMLINK, _BIND, _IDMAP) else ins.b
            raise StepError(err, ins.step.decode(),
                            _os.fsdecode(<bytes>where) if where != NULL else "")
