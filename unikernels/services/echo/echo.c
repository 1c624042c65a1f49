/* TCP echo, for stream tests. Flow control: received data is acknowledged to
 * the peer (tcp_recved) only once it has been queued back, so a slow reader
 * closes our receive window instead of filling our memory; the sent callback
 * resumes the copy. */
#include "kernel.h"
#include "services.h"
#include "net.h"
#include "lwip/tcp.h"
#include "lwip/mem.h"

struct echo {
    struct pbuf *pending;   /* received, not yet queued for sending */
    int peer_closed;
};

static void echo_free(struct tcp_pcb *pcb, struct echo *e)
{
    if (pcb) {
        tcp_arg(pcb, NULL);
        tcp_recv(pcb, NULL);
        tcp_sent(pcb, NULL);
        tcp_err(pcb, NULL);
    }
    if (e) {
        if (e->pending)
            pbuf_free(e->pending);
        mem_free(e);
    }
}

/* Returns what a callback must return: ERR_ABRT if the pcb was aborted. */
static err_t echo_close(struct tcp_pcb *pcb, struct echo *e)
{
    echo_free(pcb, e);
    if (tcp_close(pcb) == ERR_OK)
        return ERR_OK;
    tcp_abort(pcb);
    return ERR_ABRT;
}

static err_t echo_abort(struct tcp_pcb *pcb, struct echo *e)
{
    echo_free(pcb, e);
    tcp_abort(pcb);
    return ERR_ABRT;
}

/* Queues what the send buffer takes; closes once the peer is done and all is
 * queued. Returns what the calling callback must return. */
static err_t flush(struct tcp_pcb *pcb, struct echo *e)
{
    while (e->pending) {
        u16_t room = tcp_sndbuf(pcb);
        u16_t n = e->pending->len < room ? e->pending->len : room;
        if (n == 0)
            break;
        err_t err = tcp_write(pcb, e->pending->payload, n, TCP_WRITE_FLAG_COPY);
        if (err == ERR_MEM)
            break;   /* queue full: the sent callback resumes */
        if (err != ERR_OK)
            return echo_abort(pcb, e);
        e->pending = pbuf_free_header(e->pending, n);
        tcp_recved(pcb, n);
    }
    tcp_output(pcb);
    if (!e->pending && e->peer_closed)
        return echo_close(pcb, e);
    return ERR_OK;
}

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct echo *e = arg;
    if (err != ERR_OK || !e) {
        if (p)
            pbuf_free(p);
        return ERR_OK;
    }
    if (!p) {
        e->peer_closed = 1;
    } else if (e->pending) {
        pbuf_cat(e->pending, p);
    } else {
        e->pending = p;
    }
    return flush(pcb, e);
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    (void)len;
    struct echo *e = arg;
    return e ? flush(pcb, e) : ERR_OK;
}

static void on_err(void *arg, err_t err)
{
    (void)err;
    echo_free(NULL, arg);   /* the pcb is already gone */
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    (void)arg;
    if (err != ERR_OK || !pcb)
        return ERR_VAL;
    struct echo *e = mem_malloc(sizeof(*e));
    if (!e) {
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    e->pending = NULL;
    e->peer_closed = 0;
    tcp_arg(pcb, e);
    tcp_recv(pcb, on_recv);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_err);
    tcp_nagle_disable(pcb);
    return ERR_OK;
}

int echo_start(const struct boot_args *a)
{
    return net_listen(a->port, on_accept);
}
