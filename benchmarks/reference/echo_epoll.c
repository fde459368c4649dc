/*
 * echo_epoll: the C reference the agentos kernel's NOOP path is measured against.
 *
 * One thread, one level-triggered epoll set, non-blocking Unix stream sockets.
 * Each connection has an input buffer (whole frames are parsed out of it, a
 * partial frame stays for the next read) and an output buffer (all replies to
 * one read go out in one send). That is what a careful C server does; it is
 * deliberately not clever (no io_uring, no threads, no zero-copy tricks), so
 * "kernel / reference" compares two implementations of the same design.
 *
 * Wire format (src/agentos/protocol/constants.py): 16-byte little-endian header
 * u16 magic 0x4F41, u8 version 1, u8 opcode, u16 flags, u16 reserved,
 * u32 request id, u32 payload length; then the payload. NOOP (opcode 0) is
 * answered with the same opcode, request id and payload and flags REPLY. Any
 * other opcode gets an ERROR reply (not_implemented). A frame with a bad header
 * closes the connection, as the kernel's protocol error does.
 *
 * usage: echo_epoll SOCKET_PATH
 * Prints "ready" on stdout once listening; SIGTERM/SIGINT unlink the socket and exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HEADER_SIZE 16
#define MAGIC 0x4F41
#define VERSION 1
#define OP_NOOP 0x00
#define FLAG_REPLY 0x01
#define FLAG_ERROR 0x02
#define KNOWN_FLAGS 0x0F
#define MAX_PAYLOAD (16u * 1024 * 1024)
/* Read chunk: large enough that a pipelined burst is drained in a few reads. */
#define READ_CHUNK (256 * 1024)
/* Stop reading a peer that does not read its replies once this much is queued. */
#define OUT_HIGH_WATER (4 * 1024 * 1024)
#define MAX_EVENTS 256

static const char NOT_IMPLEMENTED[] =
    "{\"code\":\"not_implemented\",\"message\":\"the echo reference answers NOOP only\"}";

struct buffer {
    uint8_t *data;
    size_t start; /* first unconsumed byte */
    size_t end;   /* one past the last byte */
    size_t cap;
};

struct conn {
    int fd;
    uint32_t events; /* what epoll currently watches for this fd */
    struct buffer in;
    struct buffer out;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Make room for `need` more bytes after buf->end, compacting before growing. */
static int buffer_reserve(struct buffer *buf, size_t need) {
    if (buf->cap - buf->end >= need)
        return 0;
    if (buf->start > 0) {
        memmove(buf->data, buf->data + buf->start, buf->end - buf->start);
        buf->end -= buf->start;
        buf->start = 0;
        if (buf->cap - buf->end >= need)
            return 0;
    }
    size_t cap = buf->cap ? buf->cap : READ_CHUNK;
    while (cap - buf->end < need)
        cap *= 2;
    uint8_t *data = realloc(buf->data, cap);
    if (!data)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static int append_reply(struct buffer *out, const uint8_t *request, uint16_t flags,
                        const void *payload, uint32_t length) {
    if (buffer_reserve(out, HEADER_SIZE + (size_t)length) < 0)
        return -1;
    uint8_t *h = out->data + out->end;
    memcpy(h, request, HEADER_SIZE); /* magic, version, opcode, request id carry over */
    put16(h + 4, flags);
    put32(h + 12, length);
    memcpy(h + HEADER_SIZE, payload, length);
    out->end += HEADER_SIZE + (size_t)length;
    return 0;
}

/* Answer every whole frame in conn->in. Returns -1 on a protocol error. */
static int process_frames(struct conn *c) {
    struct buffer *in = &c->in;
    while (in->end - in->start >= HEADER_SIZE) {
        const uint8_t *h = in->data + in->start;
        uint16_t flags = get16(h + 4);
        uint32_t length = get32(h + 12);
        if (get16(h) != MAGIC || h[2] != VERSION || (flags & ~KNOWN_FLAGS) || get16(h + 6) != 0 ||
            length > MAX_PAYLOAD)
            return -1;
        if (in->end - in->start < HEADER_SIZE + (size_t)length) {
            /* Make sure the rest of a large frame fits without another reserve round trip. */
            if (buffer_reserve(in, HEADER_SIZE + (size_t)length - (in->end - in->start)) < 0)
                return -1;
            break;
        }
        int rc = h[3] == OP_NOOP
            ? append_reply(&c->out, h, FLAG_REPLY, h + HEADER_SIZE, length)
            : append_reply(&c->out, h, FLAG_REPLY | FLAG_ERROR, NOT_IMPLEMENTED,
                           sizeof NOT_IMPLEMENTED - 1);
        if (rc < 0)
            return -1;
        in->start += HEADER_SIZE + (size_t)length;
    }
    if (in->start == in->end)
        in->start = in->end = 0;
    return 0;
}

/* Send what is queued. Returns -1 if the peer is gone. */
static int flush_out(struct conn *c) {
    struct buffer *out = &c->out;
    while (out->start < out->end) {
        ssize_t n = send(c->fd, out->data + out->start, out->end - out->start, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        out->start += (size_t)n;
    }
    if (out->start == out->end)
        out->start = out->end = 0;
    return 0;
}

static void conn_close(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

/* Watch for writability only while replies are queued; stop reading a peer that lags. */
static int conn_update_interest(int ep, struct conn *c) {
    size_t queued = c->out.end - c->out.start;
    uint32_t want = (queued ? EPOLLOUT : 0) | (queued < OUT_HIGH_WATER ? EPOLLIN : 0);
    if (want == c->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    c->events = want;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int on_readable(struct conn *c) {
    for (;;) {
        if (buffer_reserve(&c->in, READ_CHUNK / 4) < 0)
            return -1;
        size_t room = c->in.cap - c->in.end;
        ssize_t n = recv(c->fd, c->in.data + c->in.end, room, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        if (n == 0)
            return -1;
        c->in.end += (size_t)n;
        if (process_frames(c) < 0 || flush_out(c) < 0)
            return -1;
        /* A short read drained the socket: skip the recv that would only say EAGAIN. */
        if ((size_t)n < room || c->out.end - c->out.start >= OUT_HIGH_WATER)
            return 0;
    }
}

static void accept_all(int ep, int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN, or a transient error such as EMFILE: try on the next event */
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        return 2;
    }
    strcpy(addr.sun_path, path);

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0)
        die("socket");
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(listener, 1024) < 0)
        die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev) < 0)
        die("epoll_ctl");
    printf("ready\n");
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                accept_all(ep, listener);
                continue;
            }
            uint32_t ev = events[i].events;
            int bad = 0;
            if (ev & EPOLLOUT)
                bad = flush_out(c) < 0;
            if (!bad && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                bad = on_readable(c) < 0;
            if (bad || conn_update_interest(ep, c) < 0)
                conn_close(ep, c);
        }
    }
    unlink(path);
    close(listener);
    close(ep);
    return 0;
}
