# Our own headers beside this file: the kernel ABI the sandbox needs that older C library
# headers lack (sandbox_compat.h, with why), and the syscall numbers of this architecture.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "includes/sandbox_compat.h" nogil:
    enum:
        __NR_pidfd_send_signal
        __NR_pidfd_open
        __NR_open_tree
        __NR_move_mount
        __NR_clone3
        __NR_close_range
        __NR_openat2
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
    ctypedef struct ao_open_how:
        uint64_t flags
        uint64_t mode
        uint64_t resolve
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
        AO_RESOLVE_NO_MAGICLINKS
        AO_RESOLVE_NO_SYMLINKS
        AO_OPEN_TREE_CLONE
        AO_MOVE_MOUNT_F_EMPTY_PATH
        AO_MOVE_MOUNT_T_EMPTY_PATH
        AO_LANDLOCK_CREATE_RULESET_VERSION
        AO_LANDLOCK_RULE_PATH_BENEATH
        AO_LANDLOCK_RULE_NET_PORT
        AO_CAPABILITY_VERSION_3


cdef extern from "includes/syscall_table.h" nogil:
    ctypedef struct ao_syscall_entry:
        const char *name
        long nr
    const ao_syscall_entry ao_syscall_table[]
