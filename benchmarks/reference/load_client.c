/*
 * load_client: drives NOOP frames at an agentos-framed Unix socket server and
 * prints one JSON object with the results, so Python can read them.
 *
 * Modes
 *   sequential  one request, wait for its reply, repeat; latency is per request.
 *   pipelined   write a batch of --batch frames and read the --batch replies
 *               (both directions at once, so neither side's socket buffer can
 *               deadlock the exchange), repeat; latency is per batch.
 * --procs N forks N clients, each with its own connection; they start together
 * and run for the same --duration after --warmup. Every reply is checked (magic,
 * version, REPLY flag, opcode, request id, length); --verify also compares payloads.
 *
 * usage: load_client --socket PATH [--mode sequential|pipelined] [--payload BYTES]
 *        [--batch N] [--procs N] [--duration SEC] [--warmup SEC] [--requests N] [--verify]
 * --requests N stops each client after N frames instead of after --duration.
 *
 * Output: {"mode", "procs", "payload", "batch", "frames", "seconds", "frames_per_s",
 *          "mib_per_s", "latency_of", "p50_ns", "p99_ns", "max_ns", "warmup_frames"};
 * exit 1 on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 16
#define MAGIC 0x4F41
#define VERSION 1
#define OP_NOOP 0x00
#define FLAG_REPLY 0x01
#define RX_CHUNK (256 * 1024)

/* Latency histogram: 64 linear sub-buckets per power of two of nanoseconds (~1.6% error). */
#define SUB_BITS 6
#define SUB_COUNT (1 << SUB_BITS)
#define HIST_SIZE ((64 - SUB_BITS + 1) * SUB_COUNT)

struct options {
    const char *socket_path;
    int pipelined;
    uint32_t payload;
    uint32_t batch;
    int procs;
    double duration;
    double warmup;
    uint64_t requests;
    int verify;
};

/* One per client process, in memory shared with the parent. */
struct result {
    uint64_t warmup_frames;
    uint64_t frames;
    uint64_t start_ns;
    uint64_t end_ns;
    int failed;
    uint64_t hist[HIST_SIZE];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int hist_index(uint64_t v) {
    if (v < SUB_COUNT)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS;
    return (shift + 1) * SUB_COUNT + (int)((v >> shift) - SUB_COUNT);
}

/* Midpoint of a bucket's value range. */
static uint64_t hist_value(int index) {
    if (index < SUB_COUNT)
        return (uint64_t)index;
    int shift = index / SUB_COUNT - 1;
    uint64_t low = ((uint64_t)(index % SUB_COUNT) + SUB_COUNT) << shift;
    return low + (((uint64_t)1 << shift) >> 1);
}

static uint64_t hist_percentile(const uint64_t *hist, uint64_t total, double q) {
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1, seen = 0;
    for (int i = 0; i < HIST_SIZE; i++) {
        seen += hist[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return 0;
}

static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static void fill_payload(uint8_t *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + 7);
}

static void write_request(uint8_t *frame, uint32_t request_id, uint32_t payload) {
    const uint8_t header[8] = {MAGIC & 0xFF, MAGIC >> 8, VERSION, OP_NOOP, 0, 0, 0, 0};
    memcpy(frame, header, sizeof header);
    put32(frame + 8, request_id);
    put32(frame + 12, payload);
}

/* Checks one reply header; the payload is compared too when `expect` is given. */
static int check_reply(const uint8_t *frame, uint32_t low_id, uint32_t high_id, uint32_t payload,
                       const uint8_t *expect) {
    uint32_t id = get32(frame + 8);
    if (frame[0] != (MAGIC & 0xFF) || frame[1] != (MAGIC >> 8) || frame[2] != VERSION ||
        frame[3] != OP_NOOP || frame[4] != FLAG_REPLY || frame[5] != 0 || frame[6] != 0 ||
        frame[7] != 0 || get32(frame + 12) != payload || id < low_id || id > high_id) {
        fprintf(stderr, "load_client: bad reply header %02x%02x %02x %02x flags %02x%02x id %u "
                        "(expected %u..%u) length %u (expected %u)\n",
                frame[1], frame[0], frame[2], frame[3], frame[5], frame[4], id, low_id, high_id,
                get32(frame + 12), payload);
        return -1;
    }
    if (expect && memcmp(frame + HEADER_SIZE, expect, payload) != 0) {
        fprintf(stderr, "load_client: reply payload differs from the request's\n");
        return -1;
    }
    return 0;
}

static int connect_to(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "load_client: socket path too long\n");
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "load_client: connect %s: %s\n", path, strerror(errno));
        return -1;
    }
    return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("load_client: send");
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            fprintf(stderr, "load_client: recv: %s\n", r ? strerror(errno) : "server closed");
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The client loop of one process: `warmup` seconds unrecorded, then the measured run. */
struct client {
    const struct options *opt;
    int fd;
    uint32_t next_id;
    uint8_t *tx;      /* one request (sequential) or a whole batch (pipelined) */
    size_t tx_size;
    uint8_t *rx;
    size_t rx_cap;
    const uint8_t *expect; /* request payload, when verifying */
};

static int round_sequential(struct client *c) {
    uint32_t payload = c->opt->payload;
    put32(c->tx + 8, c->next_id);
    if (send_all(c->fd, c->tx, c->tx_size) < 0 || recv_all(c->fd, c->rx, c->tx_size) < 0)
        return -1;
    if (check_reply(c->rx, c->next_id, c->next_id, payload, c->expect) < 0)
        return -1;
    c->next_id++;
    return 0;
}

/* Write a batch while reading its replies; replies are parsed as they arrive. */
static int round_pipelined(struct client *c) {
    const uint32_t batch = c->opt->batch, payload = c->opt->payload;
    const size_t frame_size = HEADER_SIZE + (size_t)payload;
    const uint32_t first = c->next_id, last = first + batch - 1;
    for (uint32_t i = 0; i < batch; i++)
        put32(c->tx + i * frame_size + 8, first + i);
    size_t sent = 0, have = 0; /* bytes sent; bytes of a partial reply at rx[0..have) */
    uint32_t replies = 0;
    while (replies < batch) {
        int progressed = 0;
        if (sent < c->tx_size) {
            ssize_t w = send(c->fd, c->tx + sent, c->tx_size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent += (size_t)w;
                progressed = 1;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                perror("load_client: send");
                return -1;
            }
        }
        ssize_t r = recv(c->fd, c->rx + have, c->rx_cap - have, MSG_DONTWAIT);
        if (r == 0) {
            fprintf(stderr, "load_client: server closed\n");
            return -1;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            perror("load_client: recv");
            return -1;
        }
        if (r > 0) {
            progressed = 1;
            have += (size_t)r;
            size_t pos = 0;
            while (have - pos >= frame_size) {
                if (check_reply(c->rx + pos, first, last, payload, c->expect) < 0)
                    return -1;
                pos += frame_size;
                replies++;
            }
            if (replies > batch) {
                fprintf(stderr, "load_client: more replies than requests\n");
                return -1;
            }
            memmove(c->rx, c->rx + pos, have - pos);
            have -= pos;
        }
        if (!progressed) {
            struct pollfd p = {.fd = c->fd, .events = POLLIN | (sent < c->tx_size ? POLLOUT : 0)};
            if (poll(&p, 1, -1) < 0 && errno != EINTR) {
                perror("load_client: poll");
                return -1;
            }
        }
    }
    if (have) {
        fprintf(stderr, "load_client: %zu stray bytes after the batch\n", have);
        return -1;
    }
    c->next_id += batch;
    return 0;
}

static int run_client(const struct options *opt, int go_fd, struct result *res) {
    struct client c = {.opt = opt};
    uint32_t frames_per_round = opt->pipelined ? opt->batch : 1;
    size_t frame_size = HEADER_SIZE + (size_t)opt->payload;
    c.tx_size = frame_size * frames_per_round;
    c.rx_cap = opt->pipelined ? (frame_size > RX_CHUNK ? frame_size : RX_CHUNK) + frame_size
                              : frame_size;
    c.tx = malloc(c.tx_size);
    c.rx = malloc(c.rx_cap);
    if (!c.tx || !c.rx) {
        fprintf(stderr, "load_client: out of memory\n");
        return -1;
    }
    for (uint32_t i = 0; i < frames_per_round; i++) {
        write_request(c.tx + i * frame_size, 0, opt->payload);
        fill_payload(c.tx + i * frame_size + HEADER_SIZE, opt->payload);
    }
    if (opt->verify)
        c.expect = c.tx + HEADER_SIZE;
    c.fd = connect_to(opt->socket_path);
    if (c.fd < 0)
        return -1;
    char go;
    if (read(go_fd, &go, 1) < 0) /* EOF from the parent: everyone starts now */
        return -1;
    int (*round)(struct client *) = opt->pipelined ? round_pipelined : round_sequential;

    uint64_t t = now_ns(), warm_end = t + (uint64_t)(opt->warmup * 1e9);
    while (now_ns() < warm_end) {
        if (round(&c) < 0)
            return -1;
        res->warmup_frames += frames_per_round;
    }
    res->start_ns = now_ns();
    uint64_t deadline = res->start_ns + (uint64_t)(opt->duration * 1e9);
    for (;;) {
        uint64_t before = now_ns();
        if (opt->requests ? res->frames >= opt->requests : before >= deadline)
            break;
        if (round(&c) < 0)
            return -1;
        res->hist[hist_index(now_ns() - before)]++;
        res->frames += frames_per_round;
    }
    res->end_ns = now_ns();
    close(c.fd);
    free(c.tx);
    free(c.rx);
    return 0;
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s --socket PATH [--mode sequential|pipelined] [--payload BYTES] [--batch N]\n"
            "       [--procs N] [--duration SEC] [--warmup SEC] [--requests N] [--verify]\n",
            argv0);
    exit(2);
}

static void parse_options(int argc, char **argv, struct options *opt) {
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},   {"mode", required_argument, NULL, 'm'},
        {"payload", required_argument, NULL, 'p'},  {"batch", required_argument, NULL, 'b'},
        {"procs", required_argument, NULL, 'n'},    {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},   {"requests", required_argument, NULL, 'r'},
        {"verify", no_argument, NULL, 'v'},         {NULL, 0, NULL, 0},
    };
    *opt = (struct options){.payload = 0, .batch = 10000, .procs = 1, .duration = 1.0,
                            .warmup = 0.2};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': opt->socket_path = optarg; break;
        case 'm':
            if (strcmp(optarg, "sequential") == 0) opt->pipelined = 0;
            else if (strcmp(optarg, "pipelined") == 0) opt->pipelined = 1;
            else usage(argv[0]);
            break;
        case 'p': opt->payload = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'b': opt->batch = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'n': opt->procs = atoi(optarg); break;
        case 'd': opt->duration = atof(optarg); break;
        case 'w': opt->warmup = atof(optarg); break;
        case 'r': opt->requests = strtoull(optarg, NULL, 10); break;
        case 'v': opt->verify = 1; break;
        default: usage(argv[0]);
        }
    }
    if (!opt->socket_path || optind != argc || opt->procs < 1 || opt->procs > 1024 ||
        opt->batch < 1 || opt->duration <= 0 || opt->warmup < 0)
        usage(argv[0]);
}

int main(int argc, char **argv) {
    struct options opt;
    parse_options(argc, argv, &opt);
    size_t shared_size = sizeof(struct result) * (size_t)opt.procs;
    struct result *results =
        mmap(NULL, shared_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (results == MAP_FAILED) {
        perror("load_client: mmap");
        return 1;
    }
    int go[2];
    if (pipe(go) < 0) {
        perror("load_client: pipe");
        return 1;
    }
    for (int i = 0; i < opt.procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("load_client: fork");
            return 1; /* started children see EOF on `go`, fail to connect or finish, and exit */
        }
        if (pid == 0) {
            close(go[1]);
            results[i].failed = run_client(&opt, go[0], &results[i]) < 0;
            _exit(results[i].failed);
        }
    }
    close(go[0]);
    close(go[1]); /* releases every child at once */
    int failed = 0, status;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;

    uint64_t warmup_frames = 0, frames = 0, first = UINT64_MAX, last = 0, rounds = 0, max_ns = 0;
    static uint64_t hist[HIST_SIZE];
    for (int i = 0; i < opt.procs; i++) {
        const struct result *r = &results[i];
        failed |= r->failed;
        frames += r->frames;
        warmup_frames += r->warmup_frames;
        first = r->start_ns < first ? r->start_ns : first;
        last = r->end_ns > last ? r->end_ns : last;
        for (int b = 0; b < HIST_SIZE; b++) {
            hist[b] += r->hist[b];
            rounds += r->hist[b];
            if (r->hist[b] && hist_value(b) > max_ns)
                max_ns = hist_value(b);
        }
    }
    if (failed || frames == 0) {
        fprintf(stderr, "load_client: %s\n", failed ? "a client failed" : "no frames completed");
        return 1;
    }
    double seconds = (double)(last - first) / 1e9;
    printf("{\"mode\": \"%s\", \"procs\": %d, \"payload\": %u, \"batch\": %u, \"frames\": %llu, "
           "\"seconds\": %.6f, \"frames_per_s\": %.1f, \"mib_per_s\": %.3f, "
           "\"latency_of\": \"%s\", \"p50_ns\": %llu, \"p99_ns\": %llu, \"max_ns\": %llu, "
           "\"warmup_frames\": %llu}\n",
           opt.pipelined ? "pipelined" : "sequential", opt.procs, opt.payload,
           opt.pipelined ? opt.batch : 1, (unsigned long long)frames, seconds,
           (double)frames / seconds, (double)frames * (HEADER_SIZE + opt.payload) / seconds / 1048576.0,
           opt.pipelined ? "batch" : "request",
           (unsigned long long)hist_percentile(hist, rounds, 0.50),
           (unsigned long long)hist_percentile(hist, rounds, 0.99), (unsigned long long)max_ns,
           (unsigned long long)warmup_frames);
    return 0;
}
