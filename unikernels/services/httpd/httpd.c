/* HTTP/1.1 server on the connection layer (include/conn.h).
 *
 * The layer holds each connection's unparsed input in a bounded buffer and
 * enforces the request-head deadline and the idle timeout. One request per
 * connection is handled at a time: its response head (and any small generated
 * body) is copied into lwIP, embedded files are queued by reference as far as
 * lwIP takes them, and on_writable continues. The next pipelined request is
 * parsed only once the previous response is fully queued, and /api/work runs
 * in slices between which the VM serves everyone else. */
#include <string.h>
#include "kernel.h"
#include "services.h"
#include "conn.h"
#include "embed.h"
#include "http_request.h"
#include "virtio_net.h"
#include "net.h"
#include "lwip/mem.h"
#include "lwip/stats.h"

#define HEAD_MAX 8192           /* request line + headers; beyond: 431 */
#define OUT_MAX 1024            /* response head + generated body */
#define WORK_MAX_MS 10000
#define WORK_SLICE_MS 10        /* /api/work burns at least this much, then lets waiting work run */
#define WORK_SLICE_MAX_MS 250   /* ... and at most this much when nothing waits */

struct http {
    uint32_t skip;              /* request body bytes still to discard */
    const uint8_t *body;        /* embedded body still to queue, by reference */
    uint32_t body_left;
    uint32_t work_left_ms;      /* /api/work still to burn */
    uint32_t work_total_ms;
    uint16_t out_len, out_off;
    uint8_t responding, close_after, working;
    uint8_t work_head_only, work_keep_alive, work_http10;
    char out[OUT_MAX];
};

static const struct boot_args *args;
static uint32_t requests_served;
static char head[HEAD_MAX + 1];   /* one request head at a time: single-threaded */

static struct conn_limits limits = {
    .rx_max = 16 * 1024,        /* a head (<= HEAD_MAX) and pipelined requests behind it */
    .head_timeout_ms = CONN_HEAD_TIMEOUT_S * 1000,
    .idle_timeout_ms = CONN_IDLE_TIMEOUT_S * 1000,
    .max_conns = CONN_MAX_CONNS,
    .state_size = sizeof(struct http),
};

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

/* Builds the head in h->out; a generated body (gen, gen_len) is appended to
 * it, an embedded one (file) is queued by reference after it. */
static void respond(struct http *h, int status, const char *ctype, const char *gen, uint32_t gen_len,
                    const uint8_t *file, uint32_t file_len, int head_only, int keep_alive, int http10)
{
    uint32_t len = file ? file_len : gen_len;
    const char *conn_hdr = !keep_alive ? "Connection: close\r\n"
                           : http10 ? "Connection: keep-alive\r\n" : "";
    int n = snprintf(h->out, OUT_MAX,
                     "HTTP/1.1 %d %s\r\nServer: ukproxy-unikernel\r\nX-Backend: %s\r\n"
                     "Content-Type: %s\r\nContent-Length: %u\r\n%s%s\r\n",
                     status, reason(status), args->name, ctype, (unsigned)len, conn_hdr,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head_only && gen && n + gen_len < OUT_MAX) {
        memcpy(h->out + n, gen, gen_len);
        n += (int)gen_len;
    }
    h->out_len = (uint16_t)n;
    h->out_off = 0;
    h->body = head_only ? NULL : file;
    h->body_left = head_only || !file ? 0 : file_len;
    h->close_after = !keep_alive;
    h->responding = 1;
    requests_served++;
}

static void respond_text(struct http *h, int status, const char *text, struct request *r)
{
    respond(h, status, "text/plain; charset=utf-8", text, strlen(text), NULL, 0,
            r && !strcmp(r->method, "HEAD"), r ? r->keep_alive : 0, r ? r->http10 : 0);
}

static void respond_error(struct http *h, int status)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "%d %s\n", status, reason(status));
    respond_text(h, status, msg, NULL);   /* errors close the connection */
}

/* Queues as much of the pending response as lwIP takes. */
static void send_more(struct conn *c, struct http *h)
{
    if (h->out_off < h->out_len)
        h->out_off += (uint16_t)conn_send(c, h->out + h->out_off, h->out_len - h->out_off,
                                          CONN_COPY | (h->body_left ? CONN_MORE : 0));
    if (h->out_off == h->out_len && h->body_left) {
        uint32_t n = conn_send(c, h->body, h->body_left, 0);
        h->body += n;
        h->body_left -= n;
    }
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

static void api_info(struct http *h, struct request *r, int head_only)
{
    char body[1024];
    int n = snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"ip\":\"%s\",\"port\":%u,\"uptime_ms\":%u,\"requests\":%u,"
                     "\"tx_ring_full\":%u,\"free_heap\":%u,\"heap_size\":%u,\"pbuf_pool_free\":%u,",
                     args->name, args->ip_str, args->port, (unsigned)uptime_ms(),
                     (unsigned)requests_served + 1, (unsigned)vnet_tx_full_count,
                     (unsigned)(lwip_stats.mem.avail - lwip_stats.mem.used),
                     (unsigned)lwip_stats.mem.avail,
                     (unsigned)(lwip_stats.memp[MEMP_PBUF_POOL]->avail -
                                lwip_stats.memp[MEMP_PBUF_POOL]->used));
    n += conn_stats_json(body + n, sizeof(body) - (size_t)n);
    n += snprintf(body + n, sizeof(body) - (size_t)n, ",");
    n += net_info_json(body + n, sizeof(body) - 2 - (size_t)n);
    n += snprintf(body + n, sizeof(body) - (size_t)n, "}\n");
    respond(h, 200, "application/json", body, (uint32_t)n, NULL, 0, head_only, r->keep_alive, r->http10);
}

static void route(struct http *h, struct request *r)
{
    char body[256];
    int get = !strcmp(r->method, "GET"), head_only = !strcmp(r->method, "HEAD");
    const char *path = r->path;
    int known = !strcmp(path, "/") || !strcmp(path, "/health") || !strcmp(path, "/api/info") ||
                !strcmp(path, "/api/work") || !strncmp(path, "/static/", 8);

    if (!known) {
        respond_text(h, 404, "not found\n", r);
    } else if (!get && !head_only) {
        respond_text(h, 405, "method not allowed\n", r);
    } else if (!strcmp(path, "/")) {
        snprintf(body, sizeof(body), "Hello from %s, a ukproxy unikernel backend (%s:%u)\n",
                 args->name, args->ip_str, args->port);
        respond_text(h, 200, body, r);
    } else if (!strcmp(path, "/health")) {
        respond_text(h, 200, "ok\n", r);
    } else if (!strcmp(path, "/api/info")) {
        api_info(h, r, head_only);
    } else if (!strcmp(path, "/api/work")) {
        uint32_t ms;
        if (request_query_uint(r->query, "ms", &ms) || ms > WORK_MAX_MS) {
            respond_text(h, 400, "expected /api/work?ms=N with N <= 10000\n", r);
            return;
        }
        /* CPU-bound: burnt in slices by work_slice(), answered when done. */
        h->work_total_ms = h->work_left_ms = ms;
        h->work_head_only = (uint8_t)head_only;
        h->work_keep_alive = (uint8_t)r->keep_alive;
        h->work_http10 = (uint8_t)r->http10;
        h->working = 1;
    } else {
        const struct embedded_file *f = embedded_file(path + 8);
        if (!f)
            respond_text(h, 404, "not found\n", r);
        else
            respond(h, 200, content_type(f->name), NULL, 0, f->data, f->size, head_only, r->keep_alive,
                    r->http10);
    }
}

/* One slice of /api/work, in wall-clock time like the whole request once was:
 * at least WORK_SLICE_MS, longer while nothing else waits (each turn of the
 * main loop costs time too). Answers once the time is burnt, else asks for
 * another turn. */
static void work_slice(struct conn *c, struct http *h)
{
    uint32_t start = uptime_ms(), burnt = 0;
    while (burnt < h->work_left_ms &&
           (burnt < WORK_SLICE_MS || (burnt < WORK_SLICE_MAX_MS && !conn_should_yield()))) {
        __asm__ volatile("pause");
        burnt = uptime_ms() - start;
    }
    h->work_left_ms -= burnt < h->work_left_ms ? burnt : h->work_left_ms;
    if (h->work_left_ms) {
        conn_defer(c);
        return;
    }
    h->working = 0;
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"name\":\"%s\",\"worked_ms\":%u}\n", args->name,
                     (unsigned)h->work_total_ms);
    respond(h, 200, "application/json", body, (uint32_t)n, NULL, 0, h->work_head_only, h->work_keep_alive,
            h->work_http10);
}

/* Sends the pending response, then parses and answers buffered requests one
 * at a time for as long as each response is queued at once. */
static void process(struct conn *c)
{
    struct http *h = conn_state(c);
    for (;;) {
        if (conn_closed(c))
            return;
        if (h->working) {
            if (conn_peer_closed(c)) {   /* the client went away: do not burn CPU for nobody (nginx's 499) */
                conn_close(c);
                return;
            }
            work_slice(c, h);
            if (h->working)
                return;   /* on_resume continues */
        }
        if (h->responding) {
            if (h->close_after) {   /* input after a closing response is never read: drop it */
                uint32_t n;
                conn_rx(c, &n);
                conn_consume(c, n);
            }
            send_more(c, h);
            if (conn_closed(c) || h->out_off < h->out_len || h->body_left)
                return;   /* on_writable continues */
            h->responding = 0;
            if (h->close_after) {
                conn_close(c);
                return;
            }
            conn_request_done(c);
        }
        uint32_t len;
        const uint8_t *in = conn_rx(c, &len);
        if (h->skip) {
            uint32_t n = h->skip < len ? h->skip : len;
            conn_consume(c, n);
            h->skip -= n;
            if (!h->skip)
                continue;
            if (conn_peer_closed(c))
                conn_close(c);
            return;
        }
        if (!len) {
            if (conn_peer_closed(c))
                conn_close(c);
            return;
        }
        uint32_t scan = len < HEAD_MAX ? len : HEAD_MAX;
        uint32_t head_len = request_head_end(in, len, HEAD_MAX);
        if (!head_len) {
            if (len < HEAD_MAX && !conn_rx_full(c)) {
                if (conn_peer_closed(c))
                    conn_close(c);   /* a partial head can never finish */
                return;   /* wait for the rest, within the head deadline */
            }
            uint32_t eol = 0;
            while (eol < scan && in[eol] != '\n')
                eol++;
            conn_consume(c, len);   /* the rest is discarded: the error closes the connection */
            conn_head_done(c);
            respond_error(h, eol == scan || eol > URI_MAX + 32 ? 414 : 431);
            continue;
        }
        memcpy(head, in, head_len);
        head[head_len] = 0;
        conn_consume(c, head_len);
        conn_head_done(c);
        struct request r;
        int status = request_parse(head, &r);
        if (status) {
            respond_error(h, status);
            continue;
        }
        h->skip = r.content_length;
        route(h, &r);
    }
}

static const struct conn_handlers handlers = {
    .on_data = process,
    .on_writable = process,
    .on_resume = process,
};

static int httpd_start(const struct boot_args *a)
{
    args = a;
    conn_limits_from_args(&limits);
    return conn_listen(a->port, &handlers, &limits);
}

static const char *const httpd_keys[] = {CONN_KEYS, NULL};
SERVICE_DEFINE(httpd_service, .name = "httpd", .keys = httpd_keys, .start = httpd_start);
