/* The descriptor holder: a thread of the kernel's process with a descriptor table of its own.
 *
 * The kernel's open-file limit (RLIMIT_NOFILE) bounds each descriptor table, not the process:
 * a thread that unshares its table (unshare(CLONE_FILES)) can hold as many again. The kernel
 * parks there what it must keep open for each agent but seldom uses (its pidfd, the read end
 * of its output pipe), and this thread watches them with an epoll of its own, one-shot: when
 * one is ready (an agent ended, output arrived) it says so, with a copy of the descriptor if
 * asked, and stays quiet about it until re-armed. Its table holds only its socket, its epoll
 * and what it was given.
 *
 * It never runs Python and blocks every signal (a handler run here would write the kernel's
 * wakeup descriptor by number, into the wrong table). It ends, closing everything it holds,
 * at end of file on its socket; being a thread, it dies with the kernel and nothing else.
 *
 * Wire: one SOCK_SEQPACKET socketpair, a struct ao_holder_msg per message. Kernel -> holder:
 *   HOLD slot events flags  + 1 fd: keep it as descriptor number `slot` (chosen by the kernel,
 *     from 2 up, below the open-file limit) and arm it for `events` (EPOLLONESHOT added).
 *   ARM slot events flags: arm it again.
 *   DROP slot: close it (nothing more is said about it, except a READY sent before, then DROPPED).
 * Holder -> kernel:
 *   HELLO: it runs, in its own table (the kernel may close its copy of the holder's socket).
 *   READY slot revents  (+ a copy of the descriptor if HOLD/ARM had AO_HOLDER_GIVE_BACK).
 *   DROPPED slot: closed; the slot may be given again.
 *   REFUSED slot errno + the descriptor given: it could not be held (the kernel keeps it).
 */
#ifndef AGENTOS_FD_HOLDER_H
#define AGENTOS_FD_HOLDER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox_compat.h"

enum {
    AO_HOLDER_HOLD = 1,
    AO_HOLDER_ARM = 2,
    AO_HOLDER_DROP = 3,
    AO_HOLDER_HELLO = 16,
    AO_HOLDER_READY = 17,
    AO_HOLDER_DROPPED = 18,
    AO_HOLDER_REFUSED = 19,
};

/* flags: READY carries a copy of the descriptor. */
#define AO_HOLDER_GIVE_BACK 1u

struct ao_holder_msg {
    uint32_t op;
    uint32_t slot;
    uint32_t events; /* HOLD, ARM: what to wait for; READY: what happened; REFUSED: the errno */
    uint32_t flags;
};

/* The socket's number and the epoll's in the holder's own table; slots start above them. */
#define AO_HOLDER_SOCK 0
#define AO_HOLDER_EPOLL 1
#define AO_HOLDER_FIRST_SLOT 2
#define AO_HOLDER_SOCK_KEY UINT64_MAX

static int ao_holder_send(uint32_t op, uint32_t slot, uint32_t events, int fd) {
    struct ao_holder_msg msg = {op, slot, events, 0};
    struct iovec iov = {&msg, sizeof(msg)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&control, 0, sizeof(control));
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    /* Blocking: this thread has nothing else to do until the kernel reads (it never blocks
     * on the holder: it sends without waiting and keeps what does not fit). */
    while (sendmsg(AO_HOLDER_SOCK, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

static int ao_holder_arm(int op, uint32_t slot, uint32_t events, uint32_t flags) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events | EPOLLONESHOT;
    ev.data.u64 = (uint64_t)slot | ((uint64_t)flags << 32);
    return epoll_ctl(AO_HOLDER_EPOLL, op, (int)slot, &ev);
}

/* One message from the kernel; 0 at end of file (the holder ends), -1 when none is waiting. */
static int ao_holder_command(void) {
    struct ao_holder_msg msg;
    struct iovec iov = {&msg, sizeof(msg)};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.buf;
    mh.msg_controllen = sizeof(control.buf);
    ssize_t got = recvmsg(AO_HOLDER_SOCK, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0)
        return (errno == EAGAIN || errno == EINTR) ? -1 : 0;
    if (got == 0)
        return 0;
    int given = -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (given < 0)
                given = fd;
            else
                close(fd); /* the kernel sends one; more is a bug, not something to keep */
        }
    }
    if ((size_t)got != sizeof(msg) || msg.slot < AO_HOLDER_FIRST_SLOT) {
        if (given >= 0)
            close(given);
        return 1;
    }
    switch (msg.op) {
    case AO_HOLDER_HOLD:
        if (given < 0)
            break;
        if (given != (int)msg.slot && dup3(given, (int)msg.slot, O_CLOEXEC) < 0) {
            ao_holder_send(AO_HOLDER_REFUSED, msg.slot, (uint32_t)errno, given);
            close(given);
            break;
        }
        if (ao_holder_arm(EPOLL_CTL_ADD, msg.slot, msg.events, msg.flags) < 0) {
            uint32_t err = (uint32_t)errno;
            if (given != (int)msg.slot)
                close((int)msg.slot);
            ao_holder_send(AO_HOLDER_REFUSED, msg.slot, err, given);
            close(given);
            break;
        }
        if (given != (int)msg.slot)
            close(given);
        break;
    case AO_HOLDER_ARM:
        ao_holder_arm(EPOLL_CTL_MOD, msg.slot, msg.events, msg.flags);
        break;
    case AO_HOLDER_DROP:
        /* Out of the epoll first: a copy of it may live on in the kernel's table. */
        epoll_ctl(AO_HOLDER_EPOLL, EPOLL_CTL_DEL, (int)msg.slot, NULL);
        close((int)msg.slot);
        ao_holder_send(AO_HOLDER_DROPPED, msg.slot, 0, -1);
        break;
    default:
        break;
    }
    if (given >= 0 && msg.op != AO_HOLDER_HOLD)
        close(given);
    return 1;
}

static void *ao_holder_main(void *arg) {
    int sock = (int)(intptr_t)arg;
    /* Named, so that ps and /proc/<kernel>/task/<tid>/comm tell it from the kernel's others. */
    prctl(PR_SET_NAME, "agentos-holder", 0, 0, 0);
    /* Until this succeeds the table is the kernel's: touch nothing in it but `sock`. */
    if (unshare(CLONE_FILES) != 0)
        return NULL; /* the kernel, waiting for HELLO, sees its socket close */
    if (sock != AO_HOLDER_SOCK) {
        if (dup3(sock, AO_HOLDER_SOCK, O_CLOEXEC) < 0)
            return NULL;
    }
    syscall(__NR_close_range, AO_HOLDER_SOCK + 1, ~0U, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep != AO_HOLDER_EPOLL) {
        close(AO_HOLDER_SOCK);
        return NULL;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = AO_HOLDER_SOCK_KEY;
    if (epoll_ctl(AO_HOLDER_EPOLL, EPOLL_CTL_ADD, AO_HOLDER_SOCK, &ev) < 0
            || ao_holder_send(AO_HOLDER_HELLO, 0, 0, -1) < 0)
        goto out;
    for (;;) {
        struct epoll_event events[64];
        int n = epoll_wait(AO_HOLDER_EPOLL, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        for (int i = 0; i < n; i++) {
            uint64_t key = events[i].data.u64;
            if (key == AO_HOLDER_SOCK_KEY) {
                int more;
                while ((more = ao_holder_command()) > 0)
                    ;
                if (more == 0)
                    goto out;
                continue;
            }
            uint32_t slot = (uint32_t)key, flags = (uint32_t)(key >> 32);
            if (ao_holder_send(AO_HOLDER_READY, slot, events[i].events,
                               flags & AO_HOLDER_GIVE_BACK ? (int)slot : -1) < 0)
                goto out;
        }
    }
out:
    /* Everything held goes with the holder, as it would with the kernel. */
    syscall(__NR_close_range, 0, ~0U, 0);
    return NULL;
}

/* Start the holder on `sock` (its end of the socketpair; the caller closes its own copy once
 * HELLO arrives). 0, or an errno. */
static int ao_holder_start(int sock) {
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    int err = pthread_attr_init(&attr);
    if (err)
        return err;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sigfillset(&all);
    /* The thread starts with every signal blocked: it inherits the mask it is created with. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&thread, &attr, ao_holder_main, (void *)(intptr_t)sock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return err;
}

#endif
