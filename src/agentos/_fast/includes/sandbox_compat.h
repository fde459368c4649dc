/* Kernel ABI pieces the sandbox needs that older C library headers lack.
 *
 * Every struct here is a stable Linux uapi layout, declared under our own name so
 * the build does not depend on which of <linux/mount.h>, <linux/landlock.h> or
 * <linux/sched.h> the build host ships (glibc 2.36's <sys/mount.h> clashes with
 * <linux/mount.h>). Syscall numbers from 424 on are shared by every architecture,
 * so the fallbacks below are correct wherever they are used.
 */
#ifndef AGENTOS_SANDBOX_COMPAT_H
#define AGENTOS_SANDBOX_COMPAT_H

#include <stdint.h>
#include <sys/syscall.h>

#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif
#ifndef __NR_open_tree
#define __NR_open_tree 428
#endif
#ifndef __NR_move_mount
#define __NR_move_mount 429
#endif
#ifndef __NR_fsopen
#define __NR_fsopen 430
#endif
#ifndef __NR_fsconfig
#define __NR_fsconfig 431
#endif
#ifndef __NR_fsmount
#define __NR_fsmount 432
#endif
#ifndef __NR_fspick
#define __NR_fspick 433
#endif
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef __NR_quotactl_fd
#define __NR_quotactl_fd 443
#endif
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif
#ifndef __NR_open_tree_attr
#define __NR_open_tree_attr 467
#endif

/* The audit architecture a seccomp filter must check before trusting syscall numbers. */
#if defined(__x86_64__)
#define AO_AUDIT_ARCH 0xc000003eU /* AUDIT_ARCH_X86_64 */
#define AO_ARCH_NAME "x86_64"
#elif defined(__aarch64__)
#define AO_AUDIT_ARCH 0xc00000b7U /* AUDIT_ARCH_AARCH64 */
#define AO_ARCH_NAME "aarch64"
#else
#define AO_AUDIT_ARCH 0U
#define AO_ARCH_NAME "unsupported"
#endif

/* struct clone_args, version 2 (CLONE_ARGS_SIZE_VER2 = 88 bytes). */
typedef struct {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
} ao_clone_args;

#define AO_CLONE_PIDFD 0x00001000ULL
#define AO_CLONE_INTO_CGROUP 0x200000000ULL

/* struct mount_attr (mount_setattr(2)). */
typedef struct {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
} ao_mount_attr;

/* struct open_how (openat2(2)) and the resolve flags the sandbox uses. */
typedef struct {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
} ao_open_how;

#define AO_RESOLVE_NO_MAGICLINKS 0x02ULL
#define AO_RESOLVE_NO_SYMLINKS 0x04ULL

/* open_tree(2) and move_mount(2) flags. */
#define AO_OPEN_TREE_CLONE 1U
#define AO_MOVE_MOUNT_F_EMPTY_PATH 0x00000004U
#define AO_MOVE_MOUNT_T_EMPTY_PATH 0x00000040U

/* Landlock: struct landlock_ruleset_attr grew with ABI 4 (net) and 6 (scoped);
 * the kernel accepts a larger struct when the fields it does not know are zero. */
typedef struct {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
} ao_landlock_ruleset_attr;

typedef struct __attribute__((packed)) {
    uint64_t allowed_access;
    int32_t parent_fd;
} ao_landlock_path_beneath_attr;

typedef struct {
    uint64_t allowed_access;
    uint64_t port;
} ao_landlock_net_port_attr;

#define AO_LANDLOCK_CREATE_RULESET_VERSION 1U
#define AO_LANDLOCK_RULE_PATH_BENEATH 1
#define AO_LANDLOCK_RULE_NET_PORT 2

/* struct sock_filter / sock_fprog, from <linux/filter.h>. */
typedef struct {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
} ao_sock_filter;

typedef struct {
    unsigned short len;
    ao_sock_filter *filter;
} ao_sock_fprog;

/* capset(2) with _LINUX_CAPABILITY_VERSION_3: a header and two 32-bit halves. */
typedef struct {
    uint32_t version;
    int pid;
} ao_cap_header;

typedef struct {
    uint32_t effective;
    uint32_t permitted;
    uint32_t inheritable;
} ao_cap_data;

#define AO_CAPABILITY_VERSION_3 0x20080522U

#endif
