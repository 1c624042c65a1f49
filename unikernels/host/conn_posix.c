/* include/conn.h over Linux sockets and epoll, so a service's front-end
 * (api.c) runs unchanged in a Linux process: the one-process original of the
 * split program. Same contract as lib/conn.c: a bounded receive buffer per
 * connection, head and idle deadlines, sends that take what fits and call
 * on_writable for the rest, closes that are safe from inside a handler, a
 * deferred turn, and a bounded connection count. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "conn.h"
#include "conn_posix.h"

#define TX_MAX (256 * 1024)   /* bytes a connection may have queued and not yet written */

struct conn {
    int fd;
    const struct conn_handlers *h;
    const struct conn_limits *l;
    struct conn *prev, *next, *defer_next;
    uint8_t *rx;
    uint32_t rx_off, rx_len;
    uint8_t *tx;
    uint32_t tx_off, tx_len;
    int64_t last_active, head_deadline;
    uint32_t peer_ip;
    uint16_t peer_port;
    int depth;
    uint8_t closed, close_when_sent, peer_closed, deferred, want_write, head_next, aborted;
    uint8_t state[] __attribute__((aligned(8)));
};

struct listener {
    int fd;
    const struct conn_handlers *h;
    const struct conn_limits *l;
};

static int ep = -1;
static struct listener listeners[4];
static int nlisteners;
static struct conn *conns, *defer_head, *defer_tail;
static struct conn_stats stats;
static int (*turn_hook)(void);
static int more_work;

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void conn_posix_on_turn(int (*fn)(void)) { turn_hook = fn; }

static void unlink_conn(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void release_if_done(struct conn *c)
{
    if (c->closed && !c->depth && !c->deferred) {
        free(c->rx);
        free(c->tx);
        free(c);
    }
}

/* The socket goes (after its queued bytes, unless aborted); on_close is the last call. */
static void finish(struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        if (c->aborted) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);
        c->fd = -1;
    }
    unlink_conn(c);
    stats.open--;
    c->depth++;
    if (c->h->on_close)
        c->h->on_close(c);
    c->depth--;
}

static int flush_tx(struct conn *c)
{
    while (c->tx_off < c->tx_len) {
        ssize_t w = send(c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->tx_off += (uint32_t)w;
        c->last_active = now_ms();
    }
    c->tx_off = c->tx_len = 0;
    return 1;
}

/* Reading only while the buffer has room and the peer may still send (a full
 * buffer is the window closing); writing while bytes wait. */
static void update_events(struct conn *c)
{
    int read = !c->closed && !c->peer_closed && c->rx_len < c->l->rx_max;
    struct epoll_event ev = {.events = (c->tx_len ? EPOLLOUT : 0) | (read ? EPOLLIN | EPOLLRDHUP : 0),
                             .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* After a handler: write what was queued; finish a closed connection once its bytes are out. */
static void settle(struct conn *c)
{
    if (c->fd < 0)
        return;
    int f = c->aborted ? 1 : flush_tx(c);
    if (f < 0 || (c->closed && (f == 1 || c->aborted))) {
        finish(c);
        return;
    }
    update_events(c);
}

static void enter(struct conn *c) { c->depth++; }

static void leave(struct conn *c)
{
    c->depth--;
    if (!c->depth)
        settle(c);
}

void conn_close(struct conn *c) { c->closed = 1; }

void conn_abort(struct conn *c)
{
    c->closed = 1;
    c->aborted = 1;
}

int conn_closed(const struct conn *c) { return c->closed; }

const uint8_t *conn_rx(struct conn *c, uint32_t *len)
{
    *len = c->rx_len;
    return c->rx + c->rx_off;
}

void conn_consume(struct conn *c, uint32_t n)
{
    if (n > c->rx_len)
        n = c->rx_len;
    c->rx_off += n;
    c->rx_len -= n;
    if (!c->rx_len)
        c->rx_off = 0;
}

int conn_rx_full(const struct conn *c) { return c->rx_len >= c->l->rx_max; }
int conn_peer_closed(const struct conn *c) { return c->peer_closed; }

void conn_head_done(struct conn *c) { c->head_deadline = 0; }

void conn_request_done(struct conn *c)
{
    c->head_next = 1;
    if (c->l->head_timeout_ms && c->rx_len)
        c->head_deadline = now_ms() + c->l->head_timeout_ms;
}

uint32_t conn_send(struct conn *c, const void *data, uint32_t n, unsigned flags)
{
    (void)flags;
    if (c->closed)
        return 0;
    if (!c->tx && !(c->tx = malloc(TX_MAX)))
        return 0;
    if (c->tx_off && c->tx_len == TX_MAX) {
        memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
        c->tx_len -= c->tx_off;
        c->tx_off = 0;
    }
    uint32_t room = TX_MAX - c->tx_len;
    if (n > room) {
        n = room;
        c->want_write = 1;
    }
    memcpy(c->tx + c->tx_len, data, n);
    c->tx_len += n;
    return n;
}

uint32_t conn_unacked(const struct conn *c) { return c->tx_len - c->tx_off; }

void conn_defer(struct conn *c)
{
    if (c->deferred || c->closed)
        return;
    c->deferred = 1;
    c->defer_next = NULL;
    if (defer_tail)
        defer_tail->defer_next = c;
    else
        defer_head = c;
    defer_tail = c;
}

void *conn_state(struct conn *c) { return c->state; }
uint32_t conn_peer_ip(const struct conn *c) { return c->peer_ip; }
uint16_t conn_peer_port(const struct conn *c) { return c->peer_port; }
void conn_get_stats(struct conn_stats *s) { *s = stats; }

int conn_stats_json(char *buf, size_t n)
{
    return snprintf(buf, n, "\"conn_open\":%u,\"conn_accepted\":%u,\"head_timeouts\":%u,\"idle_timeouts\":%u",
                    stats.open, stats.accepted, stats.head_timeouts, stats.idle_timeouts);
}

void conn_limits_from_args(struct conn_limits *l) { (void)l; }

int conn_listen(uint16_t port, const struct conn_handlers *h, const struct conn_limits *l)
{
    if (nlisteners == (int)(sizeof listeners / sizeof listeners[0]))
        return -1;
    if (ep < 0)
        ep = epoll_create1(EPOLL_CLOEXEC);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4096)) {
        close(fd);
        return -1;
    }
    struct listener *lis = &listeners[nlisteners++];
    *lis = (struct listener){fd, h, l};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = lis};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int is_listener(void *p)
{
    return p >= (void *)listeners && p < (void *)(listeners + nlisteners);
}

static void accept_all(struct listener *lis)
{
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(lis->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct conn *c = stats.open < lis->l->max_conns ? calloc(1, sizeof *c + lis->l->state_size) : NULL;
        if (!c || !(c->rx = malloc(lis->l->rx_max))) {
            free(c);
            stats.refused++;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->h = lis->h;
        c->l = lis->l;
        c->peer_ip = sa.sin_addr.s_addr;
        c->peer_port = ntohs(sa.sin_port);
        c->last_active = now_ms();
        if (c->l->head_timeout_ms)
            c->head_deadline = c->last_active + c->l->head_timeout_ms;
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        stats.open++;
        stats.accepted++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void readable(struct conn *c)
{
    if (c->rx_off && c->rx_off + c->rx_len > c->l->rx_max / 2) {
        memmove(c->rx, c->rx + c->rx_off, c->rx_len);
        c->rx_off = 0;
    }
    uint32_t room = c->l->rx_max - c->rx_off - c->rx_len;
    if (room && !c->peer_closed) {
        ssize_t r = recv(c->fd, c->rx + c->rx_off + c->rx_len, room, 0);
        if (r == 0) {
            c->peer_closed = 1;
        } else if (r < 0 && errno != EAGAIN) {
            conn_abort(c);
        } else if (r > 0) {
            if (!c->rx_len && c->head_next && c->l->head_timeout_ms)
                c->head_deadline = now_ms() + c->l->head_timeout_ms;   /* a new request began */
            c->head_next = 0;
            c->rx_len += (uint32_t)r;
            c->last_active = now_ms();
        }
    }
    enter(c);
    if (!c->closed)
        c->h->on_data(c);
    leave(c);
}

static void writable(struct conn *c)
{
    int f = flush_tx(c);
    if (f < 0) {
        conn_abort(c);
    } else if (f == 1 && c->want_write && c->h->on_writable) {
        c->want_write = 0;
        enter(c);
        c->h->on_writable(c);
        leave(c);
        return;
    }
    enter(c);
    leave(c);
}

static void run_deferred(void)
{
    struct conn *c = defer_head;
    defer_head = defer_tail = NULL;
    while (c) {
        struct conn *next = c->defer_next;
        c->deferred = 0;
        if (!c->closed && c->h->on_resume) {
            enter(c);
            c->h->on_resume(c);
            leave(c);
        }
        release_if_done(c);
        c = next;
    }
}

static void check_deadlines(void)
{
    int64_t now = now_ms();
    for (struct conn *c = conns, *next; c; c = next) {
        next = c->next;
        int head = c->head_deadline && now >= c->head_deadline;
        int idle = c->l->idle_timeout_ms && now - c->last_active >= c->l->idle_timeout_ms;
        if (head || idle) {
            stats.head_timeouts += head;
            stats.idle_timeouts += !head;
            conn_abort(c);
            enter(c);
            leave(c);
            release_if_done(c);
        }
    }
}

void conn_posix_run(void)
{
    struct epoll_event evs[128];
    int64_t last_check = now_ms();
    for (;;) {
        int n = epoll_wait(ep, evs, 128, defer_head || more_work ? 0 : 100);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (is_listener(p)) {
                accept_all(p);
                continue;
            }
            struct conn *c = p;
            if (c->fd < 0)
                continue;
            if (evs[i].events & EPOLLOUT)
                writable(c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                readable(c);
            release_if_done(c);
        }
        more_work = turn_hook ? turn_hook() : 0;
        run_deferred();
        if (now_ms() - last_check >= 100) {
            check_deadlines();
            last_check = now_ms();
        }
    }
}
