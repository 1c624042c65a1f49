/* kv as a Linux process: the same store, commands and log as the unikernel
 * service, behind an epoll loop. Part of the one-process original, and the way
 * to run kv's logic against redis-cli and redis-benchmark without a VM. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "aof.h"
#include "fs.h"
#include "session.h"

#define IN_CAP (KV_MAX_COMMAND + 1024)
#define OUT_CAP (128 * 1024)
#define MAX_CONNS 4096

struct conn {
    int fd;
    size_t in_len, out_off;
    struct resp_out out;
    int closing, pending;
    char in[IN_CAP];
    char outbuf[OUT_CAP];
};

static struct kv_server kv = {.name = "kv-native"};
static char log_buf[IN_CAP + 4096];
static int ep;

void *kv_mem_alloc(size_t n) { return malloc(n); }
void kv_mem_free(void *p, size_t n) { (void)n; free(p); }

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static struct resp_out log = {log_buf, 0, sizeof log_buf, 0};
static struct conn *pending[MAX_CONNS];   /* replies held until the log holds their writes */
static int npending;

static void drop(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    kv.clients--;
    if (!c->pending)
        free(c);   /* a pending one is freed when the pending list is worked off */
}

/* Writes (and under `always` syncs) the log records gathered so far. */
static int commit_log(void)
{
    if (!log.len)
        return 0;
    int rc = aof_append(&kv, log.buf, (uint32_t)log.len, now_ms());
    log.len = 0;
    if (rc)
        fprintf(stderr, "kv: cannot write the log: %s\n", strerror(-rc));
    return rc;
}

/* Sends what is buffered; 0 when all went, 1 when the socket is full, -1 on error. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->outbuf + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 1 : -1;
        c->out_off += (size_t)w;
    }
    c->out.len = c->out_off = 0;
    return 0;
}

/* Flushes a connection whose writes are logged; waits for EPOLLOUT when the
 * socket is full. Returns 1 when all went out, 0 when it waits, -1 when dropped. */
static int deliver(struct conn *c)
{
    int f = flush_out(c);
    if (f < 0 || (f == 0 && c->closing)) {
        drop(c);
        return -1;
    }
    struct epoll_event ev = {.events = f > 0 ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return f == 0;
}

/* Runs the commands the input holds. Replies wait in c->out until the end of
 * this loop turn, when one log write (and fsync) covers every connection's
 * writes: Redis's group commit. When a buffer fills first, the log is
 * committed early. Returns -1 when the connection must go. */
static int serve(struct conn *c)
{
    for (;;) {
        int close_after = 0;
        size_t used = kv_session_feed(&kv, c->in, c->in_len, &c->out, kv.aof_enabled ? &log : NULL, now_ms(),
                                      &close_after);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        c->closing |= close_after;
        int out_full = c->out.cap - c->out.len < KV_REPLY_ROOM;
        int log_full = kv.aof_enabled && log.cap - log.len < c->in_len + 64;
        if (c->closing || c->in_len == 0 || (!out_full && !log_full)) {
            if (!c->pending && c->out.len) {
                c->pending = 1;
                pending[npending++] = c;
            }
            return 0;
        }
        if (commit_log())
            return -1;   /* unlogged writes must not be acknowledged */
        int f = flush_out(c);
        if (f)
            return f < 0 ? -1 : 0;   /* socket full: the rest after EPOLLOUT */
    }
}

static void on_readable(struct conn *c)
{
    if (c->out.len)
        return;   /* backpressure: read on once the replies went out */
    if (c->in_len == IN_CAP) {
        resp_error(&c->out, "ERR Protocol error: command too large");
        c->closing = 1;
    } else {
        ssize_t r = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            drop(c);
            return;
        }
        if (r > 0)
            c->in_len += (size_t)r;
    }
    if (serve(c) < 0)
        drop(c);
}

/* The end of a loop turn: one log commit, then every held reply goes out. */
static void work_off_pending(void)
{
    int ok = commit_log() == 0;
    for (int i = 0; i < npending; i++) {
        struct conn *c = pending[i];
        c->pending = 0;
        if (c->fd < 0)
            free(c);
        else if (!ok)
            drop(c);
        else
            deliver(c);
    }
    npending = 0;
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (kv.clients >= MAX_CONNS) {
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->out = (struct resp_out){c->outbuf, 0, OUT_CAP, 0};
        kv.clients++;
        kv.connections_total++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static int listen_on(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 511))
        return -1;
    return fd;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1", *dir = NULL, *fsync_policy = "always";
    int port = 6379;
    size_t maxmemory = 64u << 20;
    static const struct option opts[] = {
        {"bind", 1, 0, 'b'}, {"port", 1, 0, 'p'}, {"dir", 1, 0, 'd'},
        {"appendfsync", 1, 0, 'f'}, {"maxmemory", 1, 0, 'm'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'b': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'd': dir = optarg; break;
        case 'f': fsync_policy = optarg; break;
        case 'm': maxmemory = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: %s [--bind A] [--port N] [--dir D] [--appendfsync always|everysec] "
                            "[--maxmemory BYTES]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    kv.started_ms = now_ms();
    if (kv_store_init(&kv.store, maxmemory)) {
        fprintf(stderr, "kv: no memory for the store\n");
        return 1;
    }
    if (dir) {
        int rc = aof_start_on_share(&kv, dir, fsync_policy, now_ms());
        if (rc) {
            fprintf(stderr, "kv: cannot use the log in %s: %s\n", dir, strerror(-rc));
            return 1;
        }
    }
    int lfd = listen_on(addr, port);
    if (lfd < 0) {
        perror("kv: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready service=kv port=%d keys=%u\n", port, kv.store.count);
    fflush(stdout);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(lfd);
            } else if (c->fd < 0) {
                continue;   /* dropped earlier in this turn */
            } else if (evs[i].events & EPOLLOUT) {
                if (deliver(c) == 1)
                    on_readable(c);   /* what backpressure held back */
            } else {
                on_readable(c);
            }
        }
        work_off_pending();
        int64_t now = now_ms();
        kv_expire_some(&kv.store, now, 64);
        aof_tick(&kv, now);
    }
}
