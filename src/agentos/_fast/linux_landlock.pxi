# Landlock (included by linux.pyx).

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

