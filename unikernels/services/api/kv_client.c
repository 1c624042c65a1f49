/* kv_port.h in the VM: batches go over TCP to kv's service address (a ukproxy
 * listener in the backend network, given as kv=IP:PORT), a few pooled
 * keep-alive connections, each carrying up to PIPELINE_MAX batches in flight
 * (RESP answers in order). Pipelined, the writes of many requests reach kv
 * together and share one group commit of its log: with one batch per link,
 * the links would cap how many writes an fsync covers. Every wait is bounded:
 * a connect and each reply get kv_timeout_ms (default 1000), a batch waits in
 * the queue no longer, and a failure answers at once — so when kv is gone the
 * api says 503 fast instead of hanging. */
#include <string.h>
#include "kernel.h"
#include "errno.h"
#include "cmdline.h"
#include "kv_port.h"
#include "kv_client.h"
#include "links.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"

#define POOL 4
#define PIPELINE_MAX 16            /* batches in flight on one link */
#define RX_MAX (64 * 1024)
#define QUEUE_MAX LINKS_INFLIGHT   /* one batch per request at a time */

struct batch_job {
    struct batch_job *next;
    kv_done_fn done;
    void *arg;
    uint32_t len, deadline;
    int commands, err;
    char buf[KV_BATCH_MAX];
};

enum link_state { L_CLOSED, L_CONNECTING, L_READY };

struct kv_link {
    struct tcp_pcb *pcb;
    enum link_state state;
    struct batch_job *first, *last;   /* in flight, oldest first (answered in this order) */
    int inflight;
    uint8_t unsent;                   /* written since the last tcp_output */
    uint32_t deadline;                /* of the connect, or of the oldest reply */
    uint32_t rx_len;
    char rx[RX_MAX];
};

/* LAZY: kv_port_init clears everything but the buffers, whose lengths say what they hold. */
static struct kv_link links[POOL] LAZY;
static struct batch_job jobs[QUEUE_MAX] LAZY;
static struct batch_job *free_jobs, *queue_head, *queue_tail, *failed;
static ip_addr_t kv_ip;
static uint16_t kv_port;
static uint32_t timeout_ms = 1000;
static int ticking;
static struct kv_client_stats stats;
static struct kv_reply replies[KV_REPLIES_MAX];

void kv_client_get_stats(struct kv_client_stats *s) { *s = stats; }

static void tick(void *arg);

static void ensure_tick(void)
{
    if (!ticking) {
        ticking = 1;
        sys_timeout(50, tick, NULL);
    }
}

static void release_job(struct batch_job *j)
{
    j->next = free_jobs;
    free_jobs = j;
}

/* Failures are answered from the timer turn, never inside kv_submit. */
static void fail_later(struct batch_job *j, int err)
{
    j->err = err;
    j->next = failed;
    failed = j;
    stats.failures++;
    ensure_tick();
}

static void drop_link(struct kv_link *l, int err)
{
    if (l->pcb) {
        tcp_arg(l->pcb, NULL);
        tcp_recv(l->pcb, NULL);
        tcp_err(l->pcb, NULL);
        tcp_sent(l->pcb, NULL);
        tcp_abort(l->pcb);
        l->pcb = NULL;
    }
    while (l->first) {
        struct batch_job *j = l->first;
        l->first = j->next;
        fail_later(j, err);
    }
    l->last = NULL;
    l->inflight = 0;
    l->state = L_CLOSED;
    l->rx_len = 0;
}

static void dispatch(void);

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct kv_link *l = arg;
    if (!p) {   /* kv (or the proxy in front of it) closed */
        drop_link(l, -ECONNRESET);
        dispatch();
        return ERR_ABRT;
    }
    if (!l->first || l->rx_len + p->tot_len > RX_MAX) {
        pbuf_free(p);
        drop_link(l, -EPROTO);   /* bytes nobody asked for, or a reply beyond any we make */
        dispatch();
        return ERR_ABRT;
    }
    pbuf_copy_partial(p, l->rx + l->rx_len, p->tot_len, 0);
    l->rx_len += p->tot_len;
    tcp_recved(pcb, p->tot_len);
    pbuf_free(p);
    while (l->rx_len) {
        int n;
        long used = l->first ? kv_parse_replies(l->rx, l->rx_len, l->first->commands, replies, KV_REPLIES_MAX, &n)
                             : -1;   /* more than was asked for */
        if (used < 0) {
            drop_link(l, -EPROTO);
            dispatch();
            return ERR_ABRT;
        }
        if (used == 0)
            break;   /* the rest of this reply is still coming */
        struct batch_job *j = l->first;
        l->first = j->next;
        if (!l->first)
            l->last = NULL;
        l->inflight--;
        l->deadline = uptime_ms() + timeout_ms;   /* kv is answering: the next reply gets a full wait */
        stats.batches++;
        j->done(j->arg, replies, n, 0);   /* the replies point into rx: consumed after */
        release_job(j);
        if (l->pcb != pcb) {   /* dropped meanwhile (a send on it failed) */
            dispatch();
            return ERR_ABRT;
        }
        memmove(l->rx, l->rx + used, l->rx_len - (uint32_t)used);
        l->rx_len -= (uint32_t)used;
    }
    dispatch();
    return l->pcb == pcb ? ERR_OK : ERR_ABRT;   /* the link may have been dropped meanwhile */
}

static void on_err(void *arg, err_t err)
{
    struct kv_link *l = arg;
    if (!l)
        return;
    l->pcb = NULL;   /* lwIP has freed it */
    drop_link(l, err == ERR_TIMEOUT ? -ETIMEDOUT : -ECONNREFUSED);
    dispatch();
}

/* Queues j on the link; dispatch sends what was queued with one tcp_output per link. */
static void send_job(struct kv_link *l, struct batch_job *j)
{
    j->next = NULL;
    if (l->last)
        l->last->next = j;
    else
        l->first = j;
    l->last = j;
    if (l->inflight++ == 0)
        l->deadline = uptime_ms() + timeout_ms;
    if (tcp_write(l->pcb, j->buf, (u16_t)j->len, TCP_WRITE_FLAG_COPY) != ERR_OK) {
        drop_link(l, -ENOMEM);
        return;
    }
    l->unsent = 1;
    ensure_tick();
}

/* The ready link with the fewest batches in flight that has room for n more bytes, or NULL. */
static struct kv_link *pick_link(uint32_t n)
{
    struct kv_link *best = NULL;
    for (int i = 0; i < POOL; i++) {
        struct kv_link *l = &links[i];
        if (l->state == L_READY && l->inflight < PIPELINE_MAX && tcp_sndbuf(l->pcb) >= n &&
            tcp_sndqueuelen(l->pcb) < TCP_SND_QUEUELEN / 2 && (!best || l->inflight < best->inflight))
            best = l;
    }
    return best;
}

static err_t on_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
    struct kv_link *l = arg;
    l->state = L_READY;
    stats.connects++;
    dispatch();
    return ERR_OK;
}

static void open_link(struct kv_link *l)
{
    l->pcb = tcp_new();
    if (!l->pcb)
        return;
    tcp_arg(l->pcb, l);
    tcp_recv(l->pcb, on_recv);
    tcp_err(l->pcb, on_err);
    tcp_nagle_disable(l->pcb);
    l->state = L_CONNECTING;
    l->deadline = uptime_ms() + timeout_ms;
    l->rx_len = 0;
    if (tcp_connect(l->pcb, &kv_ip, kv_port, on_connected) != ERR_OK) {
        tcp_arg(l->pcb, NULL);
        tcp_abort(l->pcb);
        l->pcb = NULL;
        l->state = L_CLOSED;
        return;
    }
    ensure_tick();
}

/* Gives queued batches to ready links (a full link's turn comes with its
 * replies), opening links while some wait. */
static void dispatch(void)
{
    struct kv_link *l;
    while (queue_head && (l = pick_link(queue_head->len))) {
        struct batch_job *j = queue_head;
        queue_head = j->next;
        if (!queue_head)
            queue_tail = NULL;
        send_job(l, j);
    }
    for (int i = 0; i < POOL; i++) {
        if (links[i].unsent && links[i].pcb)
            tcp_output(links[i].pcb);
        links[i].unsent = 0;
    }
    int connecting = 0, waiting = 0;
    for (struct batch_job *j = queue_head; j; j = j->next)
        waiting++;
    for (int i = 0; i < POOL; i++)
        connecting += links[i].state == L_CONNECTING;
    for (int i = 0; i < POOL && waiting > connecting; i++) {
        if (links[i].state == L_CLOSED) {
            open_link(&links[i]);
            connecting++;
        }
    }
}

/* Bounded waits: connects and replies past their deadline, queued batches too. */
static void tick(void *arg)
{
    uint32_t now = uptime_ms();
    ticking = 0;
    for (int i = 0; i < POOL; i++) {
        struct kv_link *l = &links[i];
        if ((l->state == L_CONNECTING || l->inflight) && (int32_t)(now - l->deadline) >= 0) {
            stats.timeouts++;
            drop_link(l, -ETIMEDOUT);
        }
    }
    struct batch_job **pp = &queue_head;
    queue_tail = NULL;
    while (*pp) {
        struct batch_job *j = *pp;
        if ((int32_t)(now - j->deadline) >= 0) {
            *pp = j->next;
            stats.timeouts++;
            fail_later(j, -ETIMEDOUT);
        } else {
            queue_tail = j;
            pp = &j->next;
        }
    }
    while (failed) {
        struct batch_job *j = failed;
        failed = j->next;
        j->done(j->arg, NULL, 0, j->err);
        release_job(j);
    }
    dispatch();
    int busy = queue_head != NULL;
    for (int i = 0; i < POOL; i++)
        busy |= links[i].state == L_CONNECTING || links[i].inflight;
    if (busy || failed)
        ensure_tick();
}

void kv_submit(const struct kv_batch *b, kv_done_fn done, void *arg)
{
    struct batch_job *j = free_jobs;
    if (!j)
        panic("kv_client: more batches than requests in flight");   /* QUEUE_MAX >= LINKS_INFLIGHT */
    free_jobs = j->next;
    j->next = NULL;
    j->done = done;
    j->arg = arg;
    j->commands = b->commands;
    j->len = b->len;
    j->deadline = uptime_ms() + timeout_ms;
    if (b->overflow || !kv_port) {
        fail_later(j, b->overflow ? -EMSGSIZE : -ECONNREFUSED);
        return;
    }
    memcpy(j->buf, b->buf, b->len);
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    dispatch();
    ensure_tick();
}

void kv_port_init(void)
{
    const char *target = cmdline_value("kv");
    timeout_ms = cmdline_uint("kv_timeout_ms", 10, 60000, 1000);
    for (int i = 0; i < POOL; i++)
        memset(&links[i], 0, offsetof(struct kv_link, rx));
    for (int i = 0; i < QUEUE_MAX; i++) {
        memset(&jobs[i], 0, offsetof(struct batch_job, buf));
        release_job(&jobs[i]);
    }
    if (!target)
        cmdline_die("kv=IP:PORT is required (kv's service address)", "");
    const char *colon = strchr(target, ':');
    char ip[16];
    if (!colon || colon - target >= (int)sizeof ip)
        cmdline_die("kv must be IP:PORT", target);
    memcpy(ip, target, (size_t)(colon - target));
    ip[colon - target] = 0;
    unsigned port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || (port = port * 10 + (unsigned)(*p - '0')) > 65535)
            cmdline_die("kv must be IP:PORT", target);
    }
    if (!ipaddr_aton(ip, &kv_ip) || port == 0)
        cmdline_die("kv must be IP:PORT", target);
    kv_port = (uint16_t)port;
}
