/* agentos-init: pid 1 of a sandbox, and the server of the EXECs into it.
 *
 * A sandbox (Client.sandbox) is an agent that idles until driven. Its main program used to be
 * an idle Python interpreter (sandbox/idle.py), and each EXEC into it a zygote fork plus a
 * Python child that joined the sandbox's namespaces through its pidfd, moved into its cgroup
 * and took its confinement steps again: about 2.5 ms of CPU per exec, and an interpreter's
 * pages per idle sandbox. This program is exec'd instead, as the last step of the sandbox's
 * normal setup (sandbox/child.py), so it already holds everything an exec must hold: the
 * sandbox's namespaces, cgroup, uid, no capabilities, no_new_privs, seccomp filter and
 * Landlock domain. Each EXEC is then one fork of this small process, a fresh Landlock layer
 * and an execve. It holds no secret: its environment is the sandbox's, never the kernel's.
 *
 * It reaps every orphan of its pid namespace (as pid 1 must) and talks only to the kernel,
 * over a SOCK_SEQPACKET socket handed over at spawn (argv[1]: its number). That socket is
 * close-on-exec, unnamed (a socketpair: nothing can connect to it) and never in any exec's
 * descriptors; init is not dumpable, so no process of the sandbox can open /proc/1/fd or
 * ptrace it; it ends at a SIGTERM from outside the sandbox only; and each exec runs in a
 * Landlock domain nested below init's, which (Landlock ABI 6) can neither signal init nor
 * connect to its abstract sockets. The kernel is trusted; its messages are still checked,
 * since a bad one must not take the sandbox down.
 *
 * argv[2], if given, is the agent's kernel connection (AGENTOS_FD): its end of file, like
 * that of the control socket or a SIGTERM, ends init and with it the sandbox. A crash of
 * init is the sandbox's end too: pid 1 gone, the kernel kills the namespace.
 *
 * Kernel -> init, one message each (fields end with NUL):
 *   L handled scoped file_rights {w|d}PATH... the Landlock ruleset of each exec's own layer:
 *     the agent's writable paths (w: must exist) and devices (d: where they exist); a
 *     directory gets `handled`, a file `file_rights`. Sent once, before any E.
 *   E token flags cwd argc ARGV... envc ENV...   with [stdin, stdout, stderr, control]
 *     by SCM_RIGHTS: start an exec (flags "t": the three are a terminal, made the
 *     controlling one of the exec's session).
 *   G token signal    the exec's process group gets `signal` (while its leader is unreaped,
 *     so its group id is still its own).
 * Init -> kernel:
 *   F token step errno   the exec's leader could not be forked (or the request was bad).
 *   X token status   a leader was reaped that had not told the kernel its command's end
 *     itself (it exits 0 once it has): its raw wait status.
 * A forked leader is not announced: the kernel's next word of it is the leader's own, on the
 * exec's control socket, once the command is exec'd (one wake-up of the kernel per exec start,
 * not two). Init sends F before it closes its copy of that socket, so a kernel that sees the
 * socket's end of file without a word finds the F already waiting. Init's X is how the kernel
 * learns of a leader that died before it could say its command's end (killed, or told K).
 *
 * The exec's leader is a child of init that holds the exec's control socket and speaks
 * sandbox/subreaper.py's protocol on it: it is the session and process-group leader, a child
 * subreaper, and the parent of the command, which alone takes the exec's Landlock layer: so
 * the command can neither signal its leader nor ptrace it. It sends "P<vpid>" once the command
 * is exec'd, or "E" step NUL errno NUL if the command could not be started (cwd, landlock,
 * exec...); it takes "S<n>" (signal the command) and "K" or end of file (kill the exec's whole
 * tree). When the command ends, it kills and reaps what is left of its tree, sends "X<status>"
 * (the command's raw wait status) and exits 0, which tells init to send no X of it: the kernel
 * answers the EXEC on the leader's word, without waiting for its exit and init's wake-up after
 * it. Only the leader holds that socket, and the command can neither ptrace it nor open its
 * descriptors (its Landlock layer is nested below), so the word is the leader's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "sandbox_compat.h"

#define MAX_MESSAGE (256 * 1024)   /* argv and env: the launcher's 192 KiB, with room */
#define MAX_TOKEN 64
#define EXEC_FDS 4
#define SETUP_FAILED 127

struct exec_slot {
    pid_t pid;
    char token[MAX_TOKEN + 1];
};

static int control = -1;       /* the kernel's socket */
static int connection = -1;    /* the agent's kernel connection, watched for its end */
static int signals = -1;       /* signalfd: SIGCHLD, SIGTERM */
static int ruleset = -1;       /* each exec's own Landlock layer; -1: none (no Landlock) */
static int setup_errno = 0;    /* why the ruleset could not be made: every exec is refused */
static pid_t init_pid;
static struct exec_slot *slots;
static size_t nslots, capslots;
static char message[MAX_MESSAGE + 1];

/* --- small helpers ---------------------------------------------------------------------- */

static void close_from(unsigned int first) { syscall(__NR_close_range, first, ~0U, 0); }

/* The next NUL-terminated field at *cur, or NULL when the message ends first. */
static char *field(char **cur, char *end)
{
    char *start = *cur;
    char *nul = start < end ? memchr(start, '\0', (size_t)(end - start)) : NULL;
    if (!nul)
        return NULL;
    *cur = nul + 1;
    return start;
}

static int parse_long(const char *text, long low, long high, long *out)
{
    char *tail;
    if (!text || !*text)
        return -1;
    errno = 0;
    long value = strtol(text, &tail, 10);
    if (errno || *tail || value < low || value > high)
        return -1;
    *out = value;
    return 0;
}

static int token_ok(const char *token)
{
    size_t n = strlen(token);
    if (n == 0 || n > MAX_TOKEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = token[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* One message to the kernel; a kernel that is gone ends init (and the sandbox). */
static void reply(const char *kind, const char *token, const char *a, const char *b)
{
    char out[MAX_TOKEN + 96];
    int n = snprintf(out, sizeof out, "%s%s%c%s%c%s%c", kind, token, 0, a, 0, b ? b : "", 0);
    while (send(control, out, (size_t)n - (b ? 0 : 1), MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            _exit(0);
    }
}

static void reply_number(const char *kind, const char *token, const char *a, long number)
{
    char text[24];
    snprintf(text, sizeof text, "%ld", number);
    reply(kind, token, a ? a : text, a ? text : NULL);
}

/* --- the exec's leader (a child of init) ------------------------------------------------- */

static int leader_control = -1;

/* The launch failed at `step`: say so on the exec's control socket and end. */
static void __attribute__((noreturn)) refuse(const char *step, int err)
{
    char out[64];
    int n = snprintf(out, sizeof out, "E%s%c%d%c", step, 0, err, 0);
    send(leader_control, out, (size_t)n, MSG_NOSIGNAL);
    _exit(SETUP_FAILED);
}

/* execvpe with the command's own PATH (glibc's looks at the caller's environment). */
static int exec_search(char **argv, char **envp)
{
    const char *file = argv[0];
    if (!*file)
        return ENOENT;
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return errno;
    }
    const char *path = "/bin:/usr/bin";
    for (char **e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    size_t flen = strlen(file);
    int found = ENOENT;
    char candidate[PATH_MAX];
    for (const char *dir = path;; dir++) {
        const char *colon = strchrnul(dir, ':');
        size_t dlen = (size_t)(colon - dir);
        if (dlen + flen + 2 <= sizeof candidate) {
            memcpy(candidate, dir, dlen);
            size_t at = dlen;
            if (dlen)
                candidate[at++] = '/';
            memcpy(candidate + at, file, flen + 1);
            execve(candidate, argv, envp);
            if (errno == EACCES)
                found = EACCES;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENAMETOOLONG)
                return errno;
        }
        if (!*colon)
            break;
        dir = colon;
    }
    return found;
}

/* This process's children, adopted orphans and zombies included; 0 when there is no /proc. */
static size_t children(pid_t *out, size_t max)
{
    char path[64], buf[16384];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    size_t count = 0;
    for (char *p = buf; *p && count < max;) {
        char *tail;
        long pid = strtol(p, &tail, 10);
        if (tail == p)
            break;
        out[count++] = (pid_t)pid;
        p = tail;
    }
    return count;
}

/* SIGKILL every descendant and reap them all: each death hands us its children. */
static void end_tree(void)
{
    pid_t pids[2048];
    for (;;) {
        pid_t reaped = waitpid(-1, NULL, WNOHANG | __WALL);
        if (reaped > 0)
            continue;
        if (reaped < 0)
            return; /* no child left (the usual end, when the command had none): no /proc read */
        size_t n = children(pids, 2048);
        if (n == 0)
            return; /* no /proc: what is left of the group is init's to kill */
        for (size_t i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        if (waitpid(-1, NULL, __WALL) < 0 && errno == ECHILD)
            return;
    }
}

static void __attribute__((noreturn)) lead(int fds[EXEC_FDS], int terminal, const char *cwd, char **argv,
                                           char **envp)
{
    leader_control = fds[3];
    close(control);
    if (connection >= 0)
        close(connection);
    close(signals);
    /* Dies with init; an init already gone (its pid namespace ending) is not waited for. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != init_pid)
        _exit(SETUP_FAILED);
    if (setsid() < 0)
        refuse("session", errno);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    for (int i = 0; i < 3; i++) {
        if (dup2(fds[i], i) < 0)
            refuse("descriptors", errno);
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] > 2)
            close(fds[i]);
    if (terminal && ioctl(0, TIOCSCTTY, 0) < 0)
        refuse("terminal", errno);
    if (chdir(cwd) < 0)
        refuse("cwd", errno);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &all, NULL); /* for good: see below */
    volatile int exec_errno = 0;
    const char *volatile exec_step = "exec";
    pid_t command = vfork();
    if (command == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The command's own layer below init's (the same rules), not this process's: it cannot
         * ptrace or signal init or its leader (which would orphan it out of the exec's reach),
         * nor reach their sockets, and execs cannot reach each other (ABI 6 scopes). */
        if (ruleset >= 0 && syscall(__NR_landlock_restrict_self, ruleset, 0) != 0) {
            exec_step = "landlock";
            exec_errno = errno;
            _exit(SETUP_FAILED);
        }
        close_from(3);
        exec_errno = exec_search(argv, envp);
        _exit(SETUP_FAILED);
    }
    if (command < 0)
        refuse("fork", errno);
    if (ruleset >= 0)
        close(ruleset);
    if (exec_errno) {
        waitpid(command, NULL, __WALL);
        refuse(exec_step, exec_errno);
    }
    /* First the kernel's word (it waits for it to answer the EXEC); what follows is done while
     * the command starts, with every signal still blocked. The kernel gone: EOF follows. */
    char started[32];
    int n = snprintf(started, sizeof started, "P%d", (int)command);
    send(leader_control, started, (size_t)n, MSG_NOSIGNAL);
    /* The output pipes and the terminal are the command's: their end is its tree's end. */
    close(0);
    close(1);
    close(2);
    /* Signals to the exec's group are the command's: this process keeps every one blocked
     * (pending, never delivered; a fault is delivered all the same) rather than ignore each,
     * 60 system calls while the command starts and the kernel wakes. SIGCHLD comes as data. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int reaped = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    for (;;) {
        struct pollfd p[2] = {{leader_control, POLLIN, 0}, {reaped, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents) {
            struct signalfd_siginfo info;
            while (read(reaped, &info, sizeof info) > 0) {
            }
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
                if (pid == command) {
                    end_tree();
                    /* Its exit of 0 tells init the kernel has the word (a send that failed
                     * met a kernel that closed its end: it awaits no word of this exec). */
                    char ended[32];
                    int length = snprintf(ended, sizeof ended, "X%d", status);
                    send(leader_control, ended, (size_t)length, MSG_NOSIGNAL);
                    _exit(0);
                }
            }
        }
        if (p[0].revents) {
            char in[64];
            ssize_t got = recv(leader_control, in, sizeof in - 1, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            long sig;
            if (got > 1 && in[0] == 'S') {
                in[got] = 0;
                if (parse_long(in + 1, 1, NSIG - 1, &sig) == 0)
                    kill(command, (int)sig); /* unreaped: the pid is still the command's */
                continue;
            }
            break; /* K, end of file, or nonsense from a kernel that is gone */
        }
    }
    end_tree();
    raise(SIGKILL);
    _exit(SETUP_FAILED); /* not reached: SIGKILL is never blocked */
}

/* --- init's requests --------------------------------------------------------------------- */

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void setup_landlock(char *cur, char *end)
{
    long handled, scoped, file_rights;
    if (parse_long(field(&cur, end), 0, LONG_MAX, &handled) || parse_long(field(&cur, end), 0, LONG_MAX, &scoped)
        || parse_long(field(&cur, end), 0, LONG_MAX, &file_rights)) {
        setup_errno = EINVAL;
        return;
    }
    if (ruleset >= 0) {
        close(ruleset);
        ruleset = -1;
    }
    ao_landlock_ruleset_attr attr = {(uint64_t)handled, 0, (uint64_t)scoped};
    size_t size = scoped ? sizeof attr : 8;
    int fd = (int)syscall(__NR_landlock_create_ruleset, &attr, size, 0);
    if (fd < 0) {
        setup_errno = errno;
        return;
    }
    char *entry;
    while ((entry = field(&cur, end)) != NULL) {
        int required = entry[0] == 'w';
        if ((entry[0] != 'w' && entry[0] != 'd') || entry[1] != '/') {
            setup_errno = EINVAL;
            close(fd);
            return;
        }
        int path = open(entry + 1, O_PATH | O_CLOEXEC);
        if (path < 0) {
            if (required) {
                setup_errno = errno;
                close(fd);
                return;
            }
            continue;
        }
        struct stat st;
        ao_landlock_path_beneath_attr rule;
        int ok = fstat(path, &st) == 0;
        rule.allowed_access = (uint64_t)(ok && S_ISDIR(st.st_mode) ? handled : file_rights);
        rule.parent_fd = path;
        if (!ok || syscall(__NR_landlock_add_rule, fd, AO_LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
            setup_errno = errno;
            close(path);
            close(fd);
            return;
        }
        close(path);
    }
    ruleset = fd;
    setup_errno = 0;
}

static void start_exec(char *cur, char *end, int *fds, size_t nfds)
{
    char *token = field(&cur, end);
    if (!token || !token_ok(token)) {
        close_all(fds, nfds);
        return; /* nobody to answer: the kernel never sends one */
    }
    char *flags = field(&cur, end), *cwd = field(&cur, end);
    long argc, envc;
    char **argv = NULL, **envp = NULL;
    int bad = !flags || !cwd || nfds != EXEC_FDS || parse_long(field(&cur, end), 1, MAX_MESSAGE, &argc);
    if (!bad) {
        argv = calloc((size_t)argc + 1, sizeof *argv);
        for (long i = 0; argv && i < argc && !bad; i++)
            bad = !(argv[i] = field(&cur, end));
        bad = bad || !argv || parse_long(field(&cur, end), 0, MAX_MESSAGE, &envc);
    }
    if (!bad) {
        envp = calloc((size_t)envc + 1, sizeof *envp);
        for (long i = 0; envp && i < envc && !bad; i++)
            bad = !(envp[i] = field(&cur, end));
        bad = bad || !envp || cur != end;
    }
    if (bad || setup_errno) {
        reply_number("F", token, bad ? "request" : "landlock", bad ? EINVAL : setup_errno);
    } else if (nslots == capslots && !(slots = realloc(slots, (capslots = capslots * 2 + 16) * sizeof *slots))) {
        _exit(SETUP_FAILED); /* no memory for a table of a few dozen entries: init cannot go on */
    } else {
        pid_t pid = fork();
        if (pid == 0)
            lead(fds, strchr(flags, 't') != NULL, cwd, argv, envp);
        if (pid < 0) {
            reply_number("F", token, "fork", errno);
        } else {
            slots[nslots].pid = pid;
            strcpy(slots[nslots].token, token);
            nslots++;
        }
    }
    free(argv);
    free(envp);
    close_all(fds, nfds);
}

static void signal_group(char *cur, char *end)
{
    char *token = field(&cur, end);
    long sig;
    if (!token || parse_long(field(&cur, end), 0, NSIG - 1, &sig))
        return;
    for (size_t i = 0; i < nslots; i++)
        if (strcmp(slots[i].token, token) == 0)
            kill(-slots[i].pid, (int)sig);
}

static void serve_request(void)
{
    int fds[EXEC_FDS + 1];
    union { struct cmsghdr h; char space[CMSG_SPACE(sizeof fds)]; } ctl;
    struct iovec iov = {message, MAX_MESSAGE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    ssize_t n = recvmsg(control, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        _exit(0); /* the kernel closed its end: the sandbox is over */
    size_t nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count && nfds < EXEC_FDS + 1; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    char *end = message + n, *cur = message + 1;
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        /* Never from our kernel (it sends less): refused, and answered if it can be (before
         * the exec's control socket is let go, as always). */
        message[MAX_MESSAGE] = 0;
        char *token = message[0] == 'E' ? field(&cur, end) : NULL;
        if (token && token_ok(token))
            reply_number("F", token, "request", EMSGSIZE);
        close_all(fds, nfds);
        return;
    }
    switch (message[0]) {
    case 'E':
        start_exec(cur, end, fds, nfds);
        return;
    case 'L':
        setup_landlock(cur, end);
        break;
    case 'G':
        signal_group(cur, end);
        break;
    }
    close_all(fds, nfds);
}

/* Reap every child that ended: orphans silently, an exec's leader with its status reported. */
static void reap(void)
{
    siginfo_t info;
    for (;;) {
        info.si_pid = 0;
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 || info.si_pid == 0)
            return;
        pid_t pid = info.si_pid;
        size_t i = 0;
        while (i < nslots && slots[i].pid != pid)
            i++;
        /* Still a zombie, so its group id is not reused: what its group left is killed first. */
        if (i < nslots)
            kill(-pid, SIGKILL);
        int status;
        if (waitpid(pid, &status, WNOHANG | __WALL) != pid)
            return;
        if (i < nslots) {
            /* A leader that exited 0 told the kernel its command's end itself. */
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                reply_number("X", slots[i].token, NULL, status);
            slots[i] = slots[--nslots];
        }
    }
}

int main(int argc, char **argv)
{
    long fd;
    if (argc < 2 || parse_long(argv[1], 3, INT_MAX, &fd)) {
        fprintf(stderr, "usage: agentos-init CONTROL_FD [CONNECTION_FD] (started by the agentos kernel)\n");
        return 2;
    }
    control = (int)fd;
    if (argc > 2 && parse_long(argv[2], 3, INT_MAX, &fd) == 0)
        connection = (int)fd;
    init_pid = getpid();
    /* Nothing of the sandbox may ptrace it or open its descriptors (/proc/1/fd). */
    prctl(PR_SET_DUMPABLE, 0);
    if (init_pid != 1)
        prctl(PR_SET_CHILD_SUBREAPER, 1); /* no pid namespace: still the reaper of its execs' orphans */
    if (fcntl(control, F_SETFD, FD_CLOEXEC) < 0)
        return SETUP_FAILED;
    if (connection >= 0 && fcntl(connection, F_SETFD, FD_CLOEXEC) < 0)
        connection = -1;
    /* Received descriptors must land above the standard three, which an exec's leader replaces. */
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) != i)
            return SETUP_FAILED;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signals = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signals < 0)
        return SETUP_FAILED;
    reap();
    for (;;) {
        struct pollfd p[3] = {{signals, POLLIN, 0}, {control, POLLIN, 0}, {connection, POLLIN, 0}};
        if (poll(p, connection >= 0 ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return SETUP_FAILED;
        }
        if (p[0].revents) {
            struct signalfd_siginfo info;
            /* KILL's SIGTERM ends pid 1, and the sandbox with it; only from outside the pid
             * namespace (a sender the namespace cannot see has pid 0) or from the kernel, its
             * parent: no process of the sandbox ends it so. */
            while (read(signals, &info, sizeof info) == (ssize_t)sizeof info)
                if (info.ssi_signo == SIGTERM && (info.ssi_pid == 0 || (pid_t)info.ssi_pid == getppid()))
                    return 0;
            reap();
        }
        if (p[1].revents)
            serve_request();
        if (connection >= 0 && p[2].revents) {
            char sink[4096];
            ssize_t got = read(connection, sink, sizeof sink);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
                return 0;
        }
    }
}
