/* api: the link shortener's API (links.c) as an HTTP/1.1 service on the
 * connection layer, reaching kv through its service address (kv_client.c).
 *
 * One request per connection at a time, as httpd: the head (and a small body)
 * is read within the head deadline, the request goes to the link logic, and
 * while kv is asked the connection waits (its further input stays buffered,
 * bounded by the layer). The answer is built in the heap and queued as far
 * as the connection takes it; on_writable continues. Paths that are not the
 * API's go to api_fallback: 404 in the VM, the static files in the
 * one-process original. */
#include <stdio.h>
#include <string.h>
#include "services.h"
#include "conn.h"
#include "http_request.h"
#include "wallclock.h"
#include "links.h"
#include "kv_port.h"
#include "heap.h"

#define HEAD_MAX 8192
#define BODY_MAX 4096            /* a link's JSON or form; beyond: 413 */

struct api_call {
    struct conn *c;
    struct link_req *waiting;   /* asked kv, not answered yet */
    char *out;                  /* the response (heap.h) */
    uint32_t out_len, out_off;
    uint8_t responding, close_after, head_only, http10, keep_alive, in_process;
};

static const struct boot_args *args;
static int crash_hook;            /* the test hook below: off unless crash_hook=yes */
void (*api_fallback)(struct api_call *call, const struct api_request *rq);
static uint32_t requests_served;
static char head[HEAD_MAX + 1];   /* one request head at a time: single-threaded */

static struct conn_limits limits = {
    .rx_max = HEAD_MAX + BODY_MAX,
    .head_timeout_ms = CONN_HEAD_TIMEOUT_S * 1000,
    .idle_timeout_ms = CONN_IDLE_TIMEOUT_S * 1000,
    .max_conns = 256,
    .state_size = sizeof(struct api_call),
};

int64_t api_now_ms(void) { return wallclock_ms(); }

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static void process(struct conn *c);

void api_reply(struct api_call *h, int status, const char *ctype, const char *body, uint32_t len,
               const char *location)
{
    char head[512];
    int keep = h->keep_alive && status < 500;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: ukproxy-unikernel\r\nX-Backend: %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %u\r\nCache-Control: no-store\r\n%s%s",
                     status, reason(status), args->name, ctype, (unsigned)len,
                     !keep ? "Connection: close\r\n" : h->http10 ? "Connection: keep-alive\r\n" : "",
                     status == 405 ? "Allow: GET, HEAD, POST\r\n" : "");
    uint32_t loc = location ? (uint32_t)strlen(location) : 0;
    uint32_t body_len = h->head_only ? 0 : len;
    uint32_t total = (uint32_t)n + (loc ? loc + 12 : 0) + 2 + body_len;
    h->out = heap_alloc(total);
    h->waiting = NULL;
    h->responding = 1;
    h->close_after = !keep;
    requests_served++;
    if (!h->out) {
        h->out_len = 0;
        h->close_after = 1;   /* no memory for the answer: close rather than lie */
    } else {
        uint32_t o = (uint32_t)n;
        memcpy(h->out, head, o);
        if (loc) {
            memcpy(h->out + o, "Location: ", 10);
            memcpy(h->out + o + 10, location, loc);
            memcpy(h->out + o + 10 + loc, "\r\n", 2);
            o += loc + 12;
        }
        memcpy(h->out + o, "\r\n", 2);
        o += 2;
        memcpy(h->out + o, body, body_len);
        h->out_len = o + body_len;
    }
    h->out_off = 0;
    if (h->c && !h->in_process && !conn_closed(h->c))
        conn_defer(h->c);   /* answered from kv's callback: the connection's next turn sends it */
}

static void error_reply(struct api_call *h, int status)
{
    char body[64];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", reason(status));
    h->keep_alive = 0;
    api_reply(h, status, "application/json", body, (uint32_t)n, NULL);
}

static void free_out(struct api_call *h)
{
    if (h->out)
        heap_free(h->out);
    h->out = NULL;
}

/* A test hook, off by default (boot key crash_hook=yes; the original's
 * --crash-hook), for bench.shortener's isolation row and its tests only: POST
 * /api/crash reads through a NULL pointer, as a bug in the api code would. The
 * VM panics on the page fault and the fleet replaces it; the one-process
 * original dies of SIGSEGV, taking the page and kv with it. */
static void crash(void)
{
    static volatile uint32_t *volatile nowhere;
    (void)*nowhere;
}

/* Hands a complete request (head parsed into r, body at body) to its route. */
static void dispatch(struct api_call *h, struct request *r, const uint8_t *body)
{
    struct api_request rq = {
        .method = r->method, .path = r->path, .host = r->host,
        .https = r->forwarded_proto && !strcmp(r->forwarded_proto, "https"),
        .form = r->content_type && !strncmp(r->content_type, "application/x-www-form-urlencoded", 33),
        .body = (const char *)body, .body_len = r->content_length,
    };
    h->keep_alive = (uint8_t)r->keep_alive;
    h->http10 = (uint8_t)r->http10;
    h->head_only = !strcmp(r->method, "HEAD");
    if (crash_hook && !strcmp(r->path, "/api/crash") && !strcmp(r->method, "POST"))
        crash();
    if (!strcmp(r->path, "/health")) {
        api_reply(h, 200, "text/plain", "ok\n", 3, NULL);
        return;
    }
    if (!links_owns(rq.path) && api_fallback) {
        api_fallback(h, &rq);
        return;
    }
    struct link_req *q = links_start(h, &rq);   /* copies what it keeps */
    if (!h->responding)
        h->waiting = q;
}

/* Sends the pending answer, then takes the next buffered request once it is
 * whole (head and body); returns when waiting for kv, lwIP or the client. */
static void serve(struct conn *c, struct api_call *h)
{
    for (;;) {
        if (conn_closed(c) || h->waiting)
            return;
        if (h->responding) {
            while (h->out_off < h->out_len) {
                uint32_t n = conn_send(c, h->out + h->out_off, h->out_len - h->out_off, CONN_COPY);
                if (!n)
                    return;   /* on_writable continues */
                h->out_off += n;
            }
            free_out(h);
            h->responding = 0;
            if (h->close_after) {
                conn_close(c);
                return;
            }
            conn_request_done(c);
        }
        uint32_t len;
        const uint8_t *in = conn_rx(c, &len);
        uint32_t head_len = request_head_end(in, len, HEAD_MAX);
        if (!head_len) {
            if (len >= HEAD_MAX || conn_rx_full(c)) {
                conn_consume(c, len);
                conn_head_done(c);
                error_reply(h, 431);
                continue;
            }
            if (conn_peer_closed(c))
                conn_close(c);   /* a partial head can never finish */
            return;
        }
        memcpy(head, in, head_len);
        head[head_len] = 0;
        struct request r;
        int status = request_parse(head, &r);
        if (!status && r.content_length > BODY_MAX)
            status = 413;
        if (status) {
            conn_consume(c, len);   /* an error closes the connection: its input is dropped */
            conn_head_done(c);
            error_reply(h, status);
            continue;
        }
        if (len - head_len < r.content_length) {
            if (conn_peer_closed(c))
                conn_close(c);
            return;   /* the body is still coming, within the head deadline */
        }
        conn_head_done(c);
        dispatch(h, &r, in + head_len);
        conn_consume(c, head_len + r.content_length);
    }
}

static void process(struct conn *c)
{
    struct api_call *h = conn_state(c);
    h->c = c;
    h->in_process = 1;
    serve(c, h);
    h->in_process = 0;
}

static void on_close(struct conn *c)
{
    struct api_call *h = conn_state(c);
    if (h->waiting)
        links_abandon(h->waiting);
    h->waiting = NULL;
    h->c = NULL;
    free_out(h);
}

static const struct conn_handlers handlers = {
    .on_data = process,
    .on_writable = process,
    .on_resume = process,
    .on_close = on_close,
};

int api_start(const struct boot_args *a);   /* also the one-process original's entry (host/) */
int api_start(const struct boot_args *a)
{
    args = a;
    const char *hook = cmdline_value("crash_hook");
    if (hook && strcmp(hook, "yes") && strcmp(hook, "no"))
        cmdline_die("crash_hook must be yes or no", hook);
    crash_hook = hook && !strcmp(hook, "yes");
    kv_port_init();
    conn_limits_from_args(&limits);
    return conn_listen(a->port, &handlers, &limits);
}

static const char *const api_keys[] = {"kv", "kv_timeout_ms", "crash_hook", CONN_KEYS, NULL};
SERVICE_DEFINE(api_service, .name = "api", .keys = api_keys, .start = api_start);
