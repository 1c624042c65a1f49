/* The connection layer (include/conn.h): lwIP's raw TCP callbacks wrapped so
 * that every service gets bounded receive memory, request and idle deadlines,
 * sends that fit any MSS, a bounded connection count, and closes that are safe
 * from anywhere.
 *
 * Lifetime: a struct conn outlives its pcb until no handler of it is running
 * (depth) and it is off the deferred queue; conn_close() only marks it and
 * lets go of the pcb, so a service may close from inside any handler. */
#include <string.h>
#include "kernel.h"
#include "cmdline.h"
#include "conn.h"
#include "net.h"
#include "lwip/tcp.h"
#include "lwip/mem.h"
#include "lwip/timeouts.h"
#include "lwip/priv/tcp_priv.h"

#define RX_FIRST 1024              /* first receive allocation: most request heads fit */
#define RX_BUDGET (1536 * 1024)    /* receive buffers of all connections together, for growth */
#define POLL_INTERVAL 2            /* tcp_poll every 2 x 500 ms: deadline resolution */
#define DEFER_BUDGET_MS 50         /* deferred work run back to back while the network waits */

struct listener {
    const struct conn_handlers *h;
    const struct conn_limits *l;
};

struct conn {
    struct tcp_pcb *pcb;                  /* NULL once closed */
    const struct listener *lis;
    struct conn *prev, *next;             /* open connections */
    struct conn *defer_next;
    uint8_t *rx;                          /* rx_off..rx_off+rx_len buffered */
    uint32_t rx_off, rx_len, rx_cap;
    uint32_t owed;                        /* copied but not yet given back to the window */
    uint32_t last_active;                 /* ms: bytes in, or bytes acknowledged */
    uint32_t head_deadline;               /* ms; 0: off */
    uint32_t peer_ip;
    uint16_t peer_port;
    uint16_t depth;                       /* handlers of this conn running */
    uint8_t closed, aborted, peer_closed, deferred, head_next, want_write, need_output;
    uint8_t state[] __attribute__((aligned(8)));
};

static struct conn *conns;                /* most recently accepted first */
static struct conn *defer_head, *defer_tail;
static int defer_scheduled;
static struct conn_stats stats;

/* ---- lifetime ---- */

static void release_if_done(struct conn *c)
{
    if (c->closed && !c->depth && !c->deferred)
        mem_free(c);
}

static void enter(struct conn *c)
{
    c->depth++;
}

/* After a handler: flush what it queued; returns what an lwIP callback for
 * this conn's pcb must return (ERR_ABRT when the pcb was aborted meanwhile). */
static err_t leave(struct conn *c)
{
    err_t ret = c->aborted ? ERR_ABRT : ERR_OK;
    if (!c->closed && c->need_output) {
        c->need_output = 0;
        tcp_output(c->pcb);
    }
    c->depth--;
    release_if_done(c);
    return ret;
}

static void rx_free(struct conn *c)
{
    if (c->rx) {
        stats.rx_bytes -= c->rx_cap;
        mem_free(c->rx);
        c->rx = NULL;
    }
    c->rx_off = c->rx_len = c->rx_cap = 0;
}

/* Detaches the conn from its pcb and tells the service; `rst`: abort the pcb. */
static void finish(struct conn *c, int rst)
{
    if (c->closed)
        return;
    c->closed = 1;
    struct tcp_pcb *pcb = c->pcb;
    c->pcb = NULL;
    if (pcb) {
        tcp_arg(pcb, NULL);
        tcp_recv(pcb, NULL);
        tcp_sent(pcb, NULL);
        tcp_err(pcb, NULL);
        tcp_poll(pcb, NULL, 0);
        if (!rst) {
            /* Unread input (ours, or lwIP's refused data) would make tcp_close answer
             * with a RST that can destroy our last reply in the peer: discard it. */
            if (pcb->refused_data) {
                c->owed += pcb->refused_data->tot_len;
                pbuf_free(pcb->refused_data);
                pcb->refused_data = NULL;
            }
            for (uint32_t k; c->owed; c->owed -= k) {
                k = c->owed > 0xFFFF ? 0xFFFF : c->owed;
                tcp_recved(pcb, (u16_t)k);
            }
            tcp_output(pcb);
            if (tcp_close(pcb) != ERR_OK)
                rst = 1;
        }
        if (rst) {
            tcp_abort(pcb);
            c->aborted = 1;
        }
    }
    rx_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    stats.open--;
    if (c->lis->h->on_close) {
        c->depth++;
        c->lis->h->on_close(c);
        c->depth--;
    }
}

void conn_close(struct conn *c)
{
    finish(c, 0);
    release_if_done(c);
}

void conn_abort(struct conn *c)
{
    finish(c, 1);
    release_if_done(c);
}

int conn_closed(const struct conn *c)
{
    return c->closed;
}

/* ---- receiving ---- */

/* The buffer never holds less than a full TCP window: then everything lwIP
 * accepts in the window fits, and no pbuf is ever held back for want of room. */
static uint32_t rx_max(const struct conn *c)
{
    return c->lis->l->rx_max > TCP_WND ? c->lis->l->rx_max : TCP_WND;
}

/* Reopens the window for buffer room only: window + buffered <= rx_max. */
static void reopen_window(struct conn *c)
{
    uint32_t room = rx_max(c) - c->rx_len, wnd = c->pcb->rcv_wnd;
    if (c->owed && wnd < room) {
        uint32_t grant = room - wnd;
        if (grant > c->owed)
            grant = c->owed;
        if (grant > 0xFFFF)
            grant = 0xFFFF;
        tcp_recved(c->pcb, (u16_t)grant);
        c->owed -= grant;
    }
}

/* Makes room for n more bytes at the end of the buffer; 0 on success. */
static int rx_reserve(struct conn *c, uint32_t n)
{
    uint32_t need = c->rx_len + n, max = rx_max(c);
    if (need > max)
        return -1;
    if (c->rx_off + need <= c->rx_cap)
        return 0;
    if (need <= c->rx_cap) {   /* enough room once the consumed front is dropped */
        memmove(c->rx, c->rx + c->rx_off, c->rx_len);
        c->rx_off = 0;
        return 0;
    }
    uint32_t cap = c->rx_cap ? c->rx_cap : RX_FIRST;
    while (cap < need)
        cap *= 2;
    if (cap > max)
        cap = max;
    /* A first RX_FIRST is always allowed (max_conns of them at most): a new client is
     * never refused because others hold big buffers. Growing is, past the budget. */
    if (cap > RX_FIRST && stats.rx_bytes - c->rx_cap + cap > RX_BUDGET)
        return -1;
    uint8_t *b = mem_malloc((mem_size_t)cap);
    if (!b)
        return -1;
    if (c->rx_len)
        memcpy(b, c->rx + c->rx_off, c->rx_len);
    if (c->rx) {
        stats.rx_bytes -= c->rx_cap;
        mem_free(c->rx);
    }
    stats.rx_bytes += cap;
    c->rx = b;
    c->rx_cap = cap;
    c->rx_off = 0;
    return 0;
}

const uint8_t *conn_rx(struct conn *c, uint32_t *len)
{
    *len = c->rx_len;
    return c->rx_len ? c->rx + c->rx_off : NULL;
}

void conn_consume(struct conn *c, uint32_t n)
{
    if (n > c->rx_len)
        n = c->rx_len;
    c->rx_off += n;
    c->rx_len -= n;
    if (!c->rx_len && c->rx_cap > RX_FIRST)
        rx_free(c);   /* a big head came and went: give the memory back */
    else if (!c->rx_len)
        c->rx_off = 0;
    if (!c->closed)
        reopen_window(c);   /* data lwIP holds as refused is retried at its next 250 ms timer */
}

int conn_rx_full(const struct conn *c)
{
    return c->rx_len >= rx_max(c);
}

int conn_peer_closed(const struct conn *c)
{
    return c->peer_closed;
}

/* ---- deadlines ---- */

static uint32_t deadline_in(uint32_t ms)
{
    uint32_t t = uptime_ms() + ms;
    return t ? t : 1;
}

void conn_head_done(struct conn *c)
{
    c->head_deadline = 0;
    c->head_next = 0;
}

void conn_request_done(struct conn *c)
{
    uint32_t ms = c->lis->l->head_timeout_ms;
    if (!ms)
        return;
    if (c->rx_len) {
        c->head_deadline = deadline_in(ms);
        c->head_next = 0;
    } else {
        c->head_deadline = 0;
        c->head_next = 1;
    }
}

/* ---- sending ---- */

uint32_t conn_send(struct conn *c, const void *data, uint32_t n, unsigned flags)
{
    if (c->closed)
        return 0;
    struct tcp_pcb *pcb = c->pcb;
    const uint8_t *p = data;
    uint32_t done = 0;
    /* lwIP's segment size (tcp_write): the MSS, or half the largest window the peer offered. */
    uint32_t seg = pcb->mss, half_wnd = pcb->snd_wnd_max / 2;
    if (half_wnd && half_wnd < seg)
        seg = half_wnd;
    if (!seg)
        seg = 536;
    /* A by-reference segment costs two pbufs in the send queue (head + data), a copy one. */
    uint32_t per_seg = flags & CONN_COPY ? 1 : 2;
    while (done < n) {
        uint32_t room = tcp_sndbuf(pcb), queued = pcb->snd_queuelen;
        if (queued + per_seg + 1 > TCP_SND_QUEUELEN)
            break;
        uint32_t by_queue = (TCP_SND_QUEUELEN - queued - 1) / per_seg * seg;
        uint32_t k = n - done;
        if (k > room) k = room;
        if (k > by_queue) k = by_queue;
        if (k > 0xFFFF) k = 0xFFFF;
        err_t e = ERR_MEM;
        while (k) {
            u8_t f = (flags & CONN_COPY ? TCP_WRITE_FLAG_COPY : 0) |
                     (done + k < n || (flags & CONN_MORE) ? TCP_WRITE_FLAG_MORE : 0);
            e = tcp_write(pcb, p + done, (u16_t)k, f);
            if (e != ERR_MEM || k <= seg)
                break;
            k /= 2;   /* out of segments or heap: a smaller write may still fit */
        }
        if (e == ERR_MEM || !k)
            break;
        if (e != ERR_OK) {
            finish(c, 1);
            release_if_done(c);   /* only outside a handler, where the caller must not touch c again */
            return done;
        }
        done += k;
        c->need_output = 1;
    }
    if (done < n)
        c->want_write = 1;   /* on_writable once lwIP has room (sent callback, or the poll timer) */
    if (!c->depth && c->need_output) {
        c->need_output = 0;
        tcp_output(pcb);
    }
    return done;
}

uint32_t conn_unacked(const struct conn *c)
{
    return c->closed ? 0 : (uint32_t)(TCP_SND_BUF - tcp_sndbuf(c->pcb));
}

void conn_want_writable(struct conn *c)
{
    if (!c->closed)
        c->want_write = 1;
}

/* ---- long work ---- */

static uint32_t run_started;   /* uptime when run_deferred began; 0: not running */

static void run_deferred(void *arg)
{
    (void)arg;
    struct conn *c = defer_head, *batch_tail = defer_tail;
    defer_head = defer_tail = NULL;   /* what is deferred now runs on the next turn */
    defer_scheduled = 0;
    run_started = uptime_ms() | 1;
    while (c) {
        if (uptime_ms() - run_started >= DEFER_BUDGET_MS && (work_pending || net_rx_pending())) {
            /* The network waits: the rest of this batch goes first on the next turn. */
            batch_tail->defer_next = defer_head;
            defer_head = c;
            if (!defer_tail)
                defer_tail = batch_tail;
            if (!defer_scheduled) {
                sys_timeout(0, run_deferred, NULL);
                defer_scheduled = 1;
            }
            break;
        }
        struct conn *next = c->defer_next;
        c->defer_next = NULL;
        c->deferred = 0;
        if (!c->closed && c->lis->h->on_resume) {
            enter(c);
            c->lis->h->on_resume(c);
            leave(c);
        } else {
            release_if_done(c);
        }
        c = next;
    }
    run_started = 0;
}

int conn_should_yield(void)
{
    return defer_head != NULL || work_pending || net_rx_pending();
}

void conn_defer(struct conn *c)
{
    if (c->closed || c->deferred)
        return;
    c->deferred = 1;
    if (defer_tail)
        defer_tail->defer_next = c;
    else
        defer_head = c;
    defer_tail = c;
    if (!defer_scheduled) {
        /* Due at once, so the main loop does not sleep. sys_check_timeouts runs what is due
         * at the time it began: a slice that took a millisecond or more runs again only
         * after the network has been polled. One that took none waits a millisecond, or
         * this pass would run it again and again. */
        uint32_t now = uptime_ms() | 1;
        sys_timeout(run_started == now ? 1 : 0, run_deferred, NULL);
        defer_scheduled = 1;
    }
}

/* ---- lwIP callbacks ---- */

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct conn *c = arg;
    if (!c || c->closed || err != ERR_OK) {
        if (p) {
            tcp_recved(pcb, p->tot_len);
            pbuf_free(p);
        }
        return ERR_OK;
    }
    if (p) {
        if (rx_reserve(c, p->tot_len))
            return ERR_MEM;   /* lwIP keeps this one chain and retries; the window holds back more */
        pbuf_copy_partial(p, c->rx + c->rx_off + c->rx_len, p->tot_len, 0);
        c->rx_len += p->tot_len;
        c->owed += p->tot_len;
        pbuf_free(p);
        reopen_window(c);
        if (c->head_next) {
            c->head_next = 0;
            c->head_deadline = deadline_in(c->lis->l->head_timeout_ms);
        }
    } else {
        c->peer_closed = 1;
    }
    c->last_active = uptime_ms();
    enter(c);
    c->lis->h->on_data(c);
    return leave(c);
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    (void)pcb;
    (void)len;
    struct conn *c = arg;
    if (!c || c->closed)
        return ERR_OK;
    c->last_active = uptime_ms();
    enter(c);
    if (c->want_write) {
        c->want_write = 0;
        if (c->lis->h->on_writable)
            c->lis->h->on_writable(c);
    }
    return leave(c);
}

static err_t on_poll(void *arg, struct tcp_pcb *pcb)
{
    (void)pcb;
    struct conn *c = arg;
    if (!c || c->closed)
        return ERR_OK;
    const struct conn_limits *l = c->lis->l;
    uint32_t now = uptime_ms();
    enter(c);
    if (c->head_deadline && (int32_t)(now - c->head_deadline) >= 0) {
        stats.head_timeouts++;
        finish(c, 0);
    } else if (l->idle_timeout_ms && !c->deferred && now - c->last_active >= l->idle_timeout_ms) {
        stats.idle_timeouts++;
        finish(c, conn_unacked(c) != 0);   /* a peer that stopped reading gets a RST */
    } else if (c->want_write) {
        c->want_write = 0;   /* retry a send that found lwIP out of memory */
        if (c->lis->h->on_writable)
            c->lis->h->on_writable(c);
    }
    return leave(c);
}

static void on_err(void *arg, err_t err)
{
    (void)err;
    struct conn *c = arg;
    if (!c || c->closed)
        return;
    c->pcb = NULL;   /* lwIP has freed it already */
    finish(c, 0);
    release_if_done(c);
}

/* Makes room for a new connection: closes the least recently active one that
 * waits for a request (nothing unacknowledged, not deferred). 0 on success. */
static int evict_one(void)
{
    struct conn *victim = NULL;
    for (struct conn *c = conns; c; c = c->next) {
        if (c->deferred || c->depth || c->want_write || conn_unacked(c))
            continue;
        if (!victim || (int32_t)(c->last_active - victim->last_active) <= 0)
            victim = c;
    }
    if (!victim)
        return -1;
    stats.evicted++;
    conn_close(victim);
    return 0;
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    const struct listener *lis = arg;
    if (err != ERR_OK || !pcb)
        return ERR_VAL;
    if (stats.open >= lis->l->max_conns && evict_one()) {
        stats.refused++;
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    struct conn *c = mem_malloc((mem_size_t)(sizeof(*c) + lis->l->state_size));
    if (!c) {
        stats.refused++;
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    memset(c, 0, sizeof(*c) + lis->l->state_size);
    c->pcb = pcb;
    c->lis = lis;
    c->last_active = uptime_ms();
    c->peer_ip = ip_2_ip4(&pcb->remote_ip)->addr;
    c->peer_port = pcb->remote_port;
    if (lis->l->head_timeout_ms)
        c->head_deadline = deadline_in(lis->l->head_timeout_ms);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    stats.open++;
    stats.accepted++;
    tcp_arg(pcb, c);
    tcp_recv(pcb, on_recv);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_err);
    tcp_poll(pcb, on_poll, POLL_INTERVAL);
    tcp_nagle_disable(pcb);
    return ERR_OK;
}

/* ---- set-up ---- */

void conn_limits_from_args(struct conn_limits *l)
{
    l->head_timeout_ms = cmdline_uint("head_timeout", 1, 3600, l->head_timeout_ms / 1000) * 1000;
    l->idle_timeout_ms = cmdline_uint("idle_timeout", 1, 86400, l->idle_timeout_ms / 1000) * 1000;
    l->max_conns = cmdline_uint("max_conns", 1, MEMP_NUM_TCP_PCB - 16, l->max_conns);
}

int conn_listen(uint16_t port, const struct conn_handlers *h, const struct conn_limits *l)
{
    static struct listener listeners[2];
    static int n;
    if (n == (int)(sizeof(listeners) / sizeof(listeners[0])) || !h->on_data)
        return -1;
    listeners[n].h = h;
    listeners[n].l = l;
    if (net_listen(port, on_accept, &listeners[n]))
        return -1;
    n++;
    return 0;
}

/* ---- state and counters ---- */

void *conn_state(struct conn *c)
{
    return c->state;
}

uint32_t conn_peer_ip(const struct conn *c)
{
    return c->peer_ip;
}

uint16_t conn_peer_port(const struct conn *c)
{
    return c->peer_port;
}

void conn_get_stats(struct conn_stats *s)
{
    *s = stats;
}

int conn_stats_json(char *buf, size_t n)
{
    return snprintf(buf, n,
                    "\"connections\":%u,\"accepted\":%u,\"head_timeouts\":%u,\"idle_timeouts\":%u,"
                    "\"evicted\":%u,\"refused\":%u,\"rx_buffered\":%u",
                    (unsigned)stats.open, (unsigned)stats.accepted, (unsigned)stats.head_timeouts,
                    (unsigned)stats.idle_timeouts, (unsigned)stats.evicted, (unsigned)stats.refused,
                    (unsigned)stats.rx_bytes);
}
