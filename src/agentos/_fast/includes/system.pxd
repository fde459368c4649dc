# The C library's system headers, each declared once, for every module of agentos._fast.
# Standard C (errno, string, stdlib, stdint, stdio) comes from Cython's own libc package;
# what is here is POSIX and Linux beyond it. Declarations only: the .pyx files cimport them.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)
    int close(int fd)
    int chdir(const char *path)
    int fchdir(int fd)
    int symlinkat(const char *target, int dirfd, const char *linkpath)
    int sethostname(const char *name, size_t len)
    int setresuid(unsigned int ruid, unsigned int euid, unsigned int suid)
    int setresgid(unsigned int rgid, unsigned int egid, unsigned int sgid)


cdef extern from "<fcntl.h>" nogil:
    enum:
        O_RDONLY
        O_CLOEXEC
        O_PATH
        O_DIRECTORY
        AT_FDCWD
        AT_EMPTY_PATH
        AT_RECURSIVE
    int open(const char *path, int flags, ...)


cdef extern from "<sys/stat.h>" nogil:
    enum:
        S_IFREG
    int mkdirat(int dirfd, const char *path, unsigned int mode)
    int mknodat(int dirfd, const char *path, unsigned int mode, unsigned long dev)
    int chmod(const char *path, unsigned int mode)


cdef extern from "<grp.h>" nogil:
    int setgroups(size_t size, const unsigned int *list)


cdef extern from "<signal.h>" nogil:
    enum:
        SIGCHLD


cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    enum:
        CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec *ts)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct ucred:
        int pid
        int uid
        int gid
    enum:
        AF_INET
        SOCK_DGRAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_PEERCRED
        MSG_NOSIGNAL
        MSG_DONTWAIT
    int socket(int domain, int type, int protocol)
    int accept4(int fd, void *addr, socklen_t *addrlen, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLET
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    enum:
        TFD_NONBLOCK
        TFD_CLOEXEC
        TFD_TIMER_ABSTIME
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)


cdef extern from "<sys/ioctl.h>" nogil:
    enum:
        TIOCSTI
        TIOCLINUX
        SIOCGIFFLAGS
        SIOCSIFFLAGS
    int ioctl(int fd, unsigned long request, ...)


cdef extern from "<net/if.h>" nogil:
    enum:
        IFF_UP
        IFF_RUNNING
        IFNAMSIZ
    struct ifreq:
        char ifr_name[16]
        short ifr_flags


cdef extern from "<sched.h>" nogil:
    enum:
        CLONE_NEWNS
        CLONE_NEWUTS
        CLONE_NEWIPC
        CLONE_NEWUSER
        CLONE_NEWPID
        CLONE_NEWNET
        CLONE_NEWCGROUP
        CLONE_PARENT
    int unshare(int flags)
    int setns(int fd, int nstype)


cdef extern from "<sys/mount.h>" nogil:
    enum:
        MS_RDONLY
        MS_NOSUID
        MS_NODEV
        MS_NOEXEC
        MS_REMOUNT
        MS_BIND
        MS_MOVE
        MS_REC
        MS_PRIVATE
        MS_SLAVE
        MNT_DETACH
    int mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const void *data)
    int umount2(const char *target, int flags)


cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_PDEATHSIG
        PR_GET_PDEATHSIG
        PR_SET_NO_NEW_PRIVS
        PR_GET_NO_NEW_PRIVS
        PR_SET_CHILD_SUBREAPER
        PR_CAPBSET_READ
        PR_CAPBSET_DROP
        PR_CAP_AMBIENT
        PR_CAP_AMBIENT_CLEAR_ALL
        PR_SET_DUMPABLE
        PR_GET_SECCOMP
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)


cdef extern from "<linux/seccomp.h>" nogil:
    enum:
        SECCOMP_SET_MODE_FILTER
        SECCOMP_GET_ACTION_AVAIL
        SECCOMP_RET_KILL_PROCESS
        SECCOMP_RET_ERRNO
        SECCOMP_RET_ALLOW
