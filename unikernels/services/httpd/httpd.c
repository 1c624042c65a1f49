/* HTTP/1.1 server on lwIP's raw API.
 *
 * Each connection keeps its unparsed input as a pbuf chain and acknowledges it
 * to the peer (tcp_recved) only once consumed, so a client pipelining faster
 * than we answer is held back by its receive window, not by our memory. One
 * response is in flight at a time: its head (and any small generated body) is
 * copied into lwIP; embedded static files are queued by reference, as much as
 * tcp_sndbuf allows, and the sent callback continues. The next pipelined
 * request is parsed only when the previous response is fully queued. */
#include <string.h>
#include "kernel.h"
#include "services.h"
#include "static.h"
#include "request.h"
#include "virtio_net.h"
#include "net.h"
#include "lwip/tcp.h"
#include "lwip/mem.h"
#include "lwip/stats.h"

#define HEAD_MAX 8192           /* request line + headers; beyond: 431 */
#define OUT_MAX 1024            /* response head + generated body */
#define POLL_S 2                /* tcp_poll every 4 x 500 ms */
#define WORK_MAX_MS 10000

struct conn {
    struct tcp_pcb *pcb;
    struct pbuf *in;            /* received, not yet consumed */
    uint32_t skip;              /* request body bytes still to discard */
    const uint8_t *body;        /* static body still to queue, by reference */
    uint32_t body_left;
    uint16_t out_len, out_off;
    uint8_t close_after, peer_closed;
    uint16_t idle;              /* polls since the last progress */
    char out[OUT_MAX];
};

static const struct boot_args *args;
static uint32_t requests_served, open_conns;
static char head[HEAD_MAX + 1];   /* one request head at a time: single-threaded */

/* ---- connection lifetime ---- */

static void conn_free(struct conn *c)
{
    if (c->pcb) {
        tcp_arg(c->pcb, NULL);
        tcp_recv(c->pcb, NULL);
        tcp_sent(c->pcb, NULL);
        tcp_err(c->pcb, NULL);
        tcp_poll(c->pcb, NULL, 0);
    }
    if (c->in)
        pbuf_free(c->in);
    open_conns--;
    mem_free(c);
}

/* Returns what the calling lwIP callback must return. */
static err_t conn_close(struct conn *c)
{
    struct tcp_pcb *pcb = c->pcb;
    /* Unread input would make tcp_close send RST and drop our reply: read it. */
    if (c->in)
        tcp_recved(pcb, c->in->tot_len);
    conn_free(c);
    if (tcp_close(pcb) == ERR_OK)
        return ERR_OK;
    tcp_abort(pcb);
    return ERR_ABRT;
}

static err_t conn_abort(struct conn *c)
{
    struct tcp_pcb *pcb = c->pcb;
    conn_free(c);
    tcp_abort(pcb);
    return ERR_ABRT;
}

static void consume(struct conn *c, uint32_t n)
{
    while (n) {
        uint16_t k = n > 0xFFFF ? 0xFFFF : (uint16_t)n;
        c->in = pbuf_free_header(c->in, k);
        tcp_recved(c->pcb, k);
        n -= k;
    }
}

static int response_pending(const struct conn *c)
{
    return c->out_off < c->out_len || c->body_left;
}

/* ---- responses ---- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Builds the head in c->out; a generated body (gen, gen_len) is appended to
 * it, a static one (stat) is queued by reference after it. */
static void respond(struct conn *c, int status, const char *ctype, const char *gen, uint32_t gen_len,
                    const uint8_t *stat, uint32_t stat_len, int head_only, int keep_alive, int http10)
{
    uint32_t len = stat ? stat_len : gen_len;
    const char *conn_hdr = !keep_alive ? "Connection: close\r\n"
                           : http10 ? "Connection: keep-alive\r\n" : "";
    int n = snprintf(c->out, OUT_MAX,
                     "HTTP/1.1 %d %s\r\nServer: ukproxy-unikernel\r\nX-Backend: %s\r\n"
                     "Content-Type: %s\r\nContent-Length: %u\r\n%s%s\r\n",
                     status, reason(status), args->name, ctype, (unsigned)len, conn_hdr,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head_only && gen && n + gen_len < OUT_MAX) {
        memcpy(c->out + n, gen, gen_len);
        n += (int)gen_len;
    }
    c->out_len = (uint16_t)n;
    c->out_off = 0;
    c->body = head_only ? NULL : stat;
    c->body_left = head_only || !stat ? 0 : stat_len;
    c->close_after = !keep_alive;
    requests_served++;
}

static void respond_text(struct conn *c, int status, const char *text, struct request *r)
{
    respond(c, status, "text/plain; charset=utf-8", text, strlen(text), NULL, 0,
            r && !strcmp(r->method, "HEAD"), r ? r->keep_alive : 0, r ? r->http10 : 0);
}

static void respond_error(struct conn *c, int status)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "%d %s\n", status, reason(status));
    respond_text(c, status, msg, NULL);   /* errors close the connection */
}

/* Queues as much of the pending response as lwIP takes; 0 or ERR_ABRT. */
static err_t send_more(struct conn *c)
{
    while (c->out_off < c->out_len) {
        uint16_t n = c->out_len - c->out_off, room = tcp_sndbuf(c->pcb);
        if (n > room)
            n = room;
        if (!n)
            break;
        err_t e = tcp_write(c->pcb, c->out + c->out_off, n,
                            TCP_WRITE_FLAG_COPY | (c->body_left ? TCP_WRITE_FLAG_MORE : 0));
        if (e == ERR_MEM)
            break;   /* retried from the sent or poll callback */
        if (e != ERR_OK)
            return conn_abort(c);
        c->out_off += n;
    }
    while (c->out_off == c->out_len && c->body_left) {
        uint32_t n = c->body_left;
        uint16_t room = tcp_sndbuf(c->pcb);
        if (n > room)
            n = room;
        if (!n)
            break;
        err_t e = tcp_write(c->pcb, c->body, (uint16_t)n, n < c->body_left ? TCP_WRITE_FLAG_MORE : 0);
        if (e == ERR_MEM)
            break;
        if (e != ERR_OK)
            return conn_abort(c);
        c->body += n;
        c->body_left -= n;
    }
    tcp_output(c->pcb);
    return ERR_OK;
}

/* ---- routes ---- */

static const char *content_type(const char *name)
{
    const char *dot = NULL;
    for (const char *p = name; *p; p++)
        if (*p == '.')
            dot = p;
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".txt")) return "text/plain; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css";
    if (!strcmp(dot, ".js")) return "application/javascript";
    if (!strcmp(dot, ".json")) return "application/json";
    return "application/octet-stream";
}

static void route(struct conn *c, struct request *r)
{
    char body[768];
    int get = !strcmp(r->method, "GET"), head_only = !strcmp(r->method, "HEAD");
    const char *path = r->path;
    int known = !strcmp(path, "/") || !strcmp(path, "/health") || !strcmp(path, "/api/info") ||
                !strcmp(path, "/api/work") || !strncmp(path, "/static/", 8);

    if (!known) {
        respond_text(c, 404, "not found\n", r);
    } else if (!get && !head_only) {
        respond_text(c, 405, "method not allowed\n", r);
    } else if (!strcmp(path, "/")) {
        snprintf(body, sizeof(body), "Hello from %s, a ukproxy unikernel backend (%s:%u)\n",
                 args->name, args->ip_str, args->port);
        respond_text(c, 200, body, r);
    } else if (!strcmp(path, "/health")) {
        respond_text(c, 200, "ok\n", r);
    } else if (!strcmp(path, "/api/info")) {
        int n = snprintf(body, sizeof(body),
                         "{\"name\":\"%s\",\"ip\":\"%s\",\"port\":%u,\"uptime_ms\":%u,\"requests\":%u,"
                         "\"tx_ring_full\":%u,\"connections\":%u,\"free_heap\":%u,\"heap_size\":%u,\"pbuf_pool_free\":%u,",
                         args->name, args->ip_str, args->port, (unsigned)uptime_ms(),
                         (unsigned)requests_served + 1, (unsigned)vnet_tx_full_count, (unsigned)open_conns,
                         (unsigned)(lwip_stats.mem.avail - lwip_stats.mem.used),
                         (unsigned)lwip_stats.mem.avail,
                         (unsigned)(lwip_stats.memp[MEMP_PBUF_POOL]->avail -
                                    lwip_stats.memp[MEMP_PBUF_POOL]->used));
        n += net_info_json(body + n, sizeof(body) - 2 - (size_t)n);
        n += snprintf(body + n, sizeof(body) - (size_t)n, "}\n");
        respond(c, 200, "application/json", body, (uint32_t)n, NULL, 0, head_only, r->keep_alive, r->http10);
    } else if (!strcmp(path, "/api/work")) {
        uint32_t ms;
        if (request_query_uint(r->query, "ms", &ms) || ms > WORK_MAX_MS) {
            respond_text(c, 400, "expected /api/work?ms=N with N <= 10000\n", r);
            return;
        }
        busy_wait_ms(ms);   /* a CPU-bound handler: the whole VM is busy meanwhile */
        int n = snprintf(body, sizeof(body), "{\"name\":\"%s\",\"worked_ms\":%u}\n", args->name,
                         (unsigned)ms);
        respond(c, 200, "application/json", body, (uint32_t)n, NULL, 0, head_only, r->keep_alive, r->http10);
    } else {
        const struct static_file *f = static_files;
        while (f->name && strcmp(f->name, path + 8))
            f++;
        if (!f->name)
            respond_text(c, 404, "not found\n", r);
        else
            respond(c, 200, content_type(f->name), NULL, 0, f->data, f->size, head_only, r->keep_alive,
                    r->http10);
    }
}

/* Queues the pending response, then parses and answers buffered requests for
 * as long as each response fits into lwIP's send buffer at once. */
static err_t process(struct conn *c)
{
    for (;;) {
        if (response_pending(c)) {
            err_t e = send_more(c);
            if (e != ERR_OK)
                return e;
            if (response_pending(c))
                return ERR_OK;   /* the sent callback continues */
        }
        if (c->close_after || !c->in)
            break;
        if (c->skip) {
            uint32_t n = c->skip < c->in->tot_len ? c->skip : c->in->tot_len;
            consume(c, n);
            c->skip -= n;
            continue;
        }
        u16_t end = pbuf_memfind(c->in, "\r\n\r\n", 4, 0);
        if (end == 0xFFFF) {
            if (c->in->tot_len <= HEAD_MAX)
                break;   /* wait for the rest of the head */
            u16_t eol = pbuf_memfind(c->in, "\r\n", 2, 0);
            respond_error(c, eol == 0xFFFF || eol > URI_MAX + 32 ? 414 : 431);
            continue;
        }
        uint32_t head_len = (uint32_t)end + 4;
        if (head_len > HEAD_MAX) {
            u16_t eol = pbuf_memfind(c->in, "\r\n", 2, 0);
            respond_error(c, eol > URI_MAX + 32 ? 414 : 431);
            continue;
        }
        pbuf_copy_partial(c->in, head, (u16_t)head_len, 0);
        head[head_len] = 0;
        consume(c, head_len);
        struct request r;
        int status = request_parse(head, &r);
        if (status) {
            respond_error(c, status);
            continue;
        }
        c->skip = r.content_length;
        route(c, &r);
    }
    /* Everything is queued: close if asked to, or if the peer is done and no
     * complete request is left (a partial one can never finish). */
    if (c->close_after || c->peer_closed)
        return conn_close(c);
    return ERR_OK;
}

/* ---- lwIP callbacks ---- */

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct conn *c = arg;
    if (!c || err != ERR_OK) {
        if (p) {
            tcp_recved(pcb, p->tot_len);
            pbuf_free(p);
        }
        return ERR_OK;
    }
    c->idle = 0;
    if (!p) {
        c->peer_closed = 1;
    } else if (c->close_after) {
        tcp_recved(pcb, p->tot_len);   /* answering an error: discard the rest */
        pbuf_free(p);
        return ERR_OK;
    } else if (c->in) {
        pbuf_cat(c->in, p);
    } else {
        c->in = p;
    }
    return process(c);
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    struct conn *c = arg;
    if (!c)
        return ERR_OK;
    c->idle = 0;
    return process(c);
}

static err_t on_poll(void *arg, struct tcp_pcb *pcb)
{
    struct conn *c = arg;
    if (!c)
        return ERR_OK;
    if (++c->idle * POLL_S >= args->idle_timeout_s)
        return response_pending(c) ? conn_abort(c) : conn_close(c);
    return process(c);   /* retries a tcp_write that failed for lack of memory */
}

static void on_err(void *arg, err_t err)
{
    struct conn *c = arg;
    if (c) {
        c->pcb = NULL;   /* lwIP already freed it */
        conn_free(c);
    }
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    if (err != ERR_OK || !pcb)
        return ERR_VAL;
    struct conn *c = mem_malloc(sizeof(*c));
    if (!c) {
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    memset(c, 0, offsetof(struct conn, out));
    c->pcb = pcb;
    open_conns++;
    tcp_arg(pcb, c);
    tcp_recv(pcb, on_recv);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_err);
    tcp_poll(pcb, on_poll, 4);
    tcp_nagle_disable(pcb);
    return ERR_OK;
}

int httpd_start(const struct boot_args *a)
{
    args = a;
    return net_listen(a->port, on_accept);
}
