/* static: serves the 9P share as nginx serves a root.
 *
 * GET and HEAD only; Content-Type by extension; index.html for a directory
 * asked for with its slash, a 301 adding the slash otherwise; ETag and
 * Last-Modified with 304s; one Range per request (206/416). Paths are
 * normalised by share_path() and never resolved; symlinks are never followed
 * (fs.h refuses them, and a walk through one fails).
 *
 * Open files are cached by path for open_file_cache_valid_ms (file_cache.c,
 * nginx's open_file_cache): a repeated request skips the walk, open and
 * getattr round trips, and an edit on the host is served within that bound
 * (at once with 0, which turns the cache off). A body streams from the share through one of
 * STAGES staging buffers: a piece is read into it, lwIP copies out what its
 * send buffer takes, and on_writable goes on when acknowledgements make room;
 * no file is ever held whole in guest memory. Connections beyond STAGES wait
 * in order, and a stream whose client stopped reading loses its buffer (a
 * reset) to them after SEND_STALL_MS. One request per connection per turn of the
 * main loop: a pipelined batch yields (conn_defer) between requests, since
 * each one waits for the host. */
#include <string.h>
#include "kernel.h"
#include "cmdline.h"
#include "conn.h"
#include "fs.h"
#include "services.h"
#include "lwip/opt.h"
#include "lwip/mem.h"
#include "lwip/timeouts.h"
#include "lwip/stats.h"
#include "conditional.h"
#include "http_date.h"
#include "mime.h"
#include "share_path.h"
#include "file_cache.h"
#include "http_request.h"
#include "validators.h"
#include "wallclock.h"

#define HEAD_MAX 8192            /* request line + fields; beyond: 431 (or 414) */
#define OUT_MAX (URI_MAX + 1024)   /* response head: the fields, and a Location up to a target long */
#define STAGE_SIZE 32768         /* one read from the share into a staging buffer */
#define STAGES 16                /* bodies streaming at once; the others wait their turn (FIFO) */
#define SEND_STALL_MS 5000       /* a stream that took no byte this long loses to a waiting one */
#define SMALL_MAX 8192           /* a body this small that lwIP can take at once skips the queue */
#define HEAP_RESERVE (1024 * 1024)   /* ... while this much of lwIP's heap stays free for the rest */
#define PIPELINE_UNACKED_MAX 8192    /* the next pipelined request waits until the client reads */
#define SKIP_MAX (1024 * 1024)   /* request body a 405 may carry and still keep the connection */

struct req_state {
    char *pending;               /* head bytes lwIP has not taken yet (mem_malloc'd), or NULL */
    uint32_t pending_len, pending_off;
    fs_file file;                /* open (has_file) from its stat until the response is queued */
    uint8_t has_file, busy, close_after;
    uint16_t cache_slot;         /* the file cache entry held for file (file_cache.h), or 0: file is ours to close */
    uint8_t stage;               /* staging buffer held while streaming: its index + 1, or 0 */
    uint8_t waiting;             /* in the queue for a staging buffer */
    uint32_t progress_ms;        /* when lwIP last took bytes of this body */
    struct conn *self;
    struct req_state *next_wait;
    uint32_t st_off, st_len;     /* its bytes not yet queued: [st_off, st_len) */
    uint64_t off, left;          /* the body still to queue: [off, off + left) of file */
    uint32_t skip;               /* request body bytes still to discard */
};

static struct conn_limits limits = {
    .rx_max = HEAD_MAX,
    .head_timeout_ms = CONN_HEAD_TIMEOUT_S * 1000,
    .idle_timeout_ms = CONN_IDLE_TIMEOUT_S * 1000,
    .max_conns = CONN_MAX_CONNS,
    .state_size = sizeof(struct req_state),
};

static const struct boot_args *args;
static char head[HEAD_MAX + 1];          /* the request being answered: one at a time */
static char out[OUT_MAX];                /* the response head being built */
/* File bytes on their way into lwIP, which copies them. A body streams only
 * while it holds one of these: that bounds the staging memory, and the lwIP
 * heap that streaming bodies fill (STAGES x TCP_SND_BUF), however many
 * clients download at once. */
static uint8_t stages[STAGES][STAGE_SIZE] LAZY;   /* filled by fs_read before use */
static struct req_state *stage_owner[STAGES];
static uint8_t small_buf[SMALL_MAX];     /* a small body between the share and lwIP, within one call */
static struct req_state *wait_head, *wait_tail;
static int stall_check_armed;
static char path[SHARE_PATH_MAX + 16];   /* + "/index.html" */

static void process(struct conn *c);

/* ---- responses ---- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static void free_pending(struct req_state *s)
{
    if (s->pending)
        mem_free(s->pending);
    s->pending = NULL;
}

static void stage_put(struct req_state *s);
static void stop_waiting(struct req_state *s);

static void close_file(struct req_state *s)
{
    if (s->has_file && s->cache_slot)
        fcache_release(s->cache_slot);
    else if (s->has_file)
        fs_close(s->file);
    s->has_file = 0;
    s->cache_slot = 0;
    stop_waiting(s);
    stage_put(s);
}

/* The response is fully queued: ready for the next request. */
static void response_done(struct conn *c, struct req_state *s)
{
    close_file(s);
    s->busy = 0;
    conn_request_done(c);
}

static void stage_take(struct req_state *s, int i)
{
    stage_owner[i] = s;
    s->stage = (uint8_t)(i + 1);
    s->progress_ms = uptime_ms();
}

/* 1 if s now holds a staging buffer. */
static int stage_get(struct req_state *s)
{
    for (int i = 0; i < STAGES; i++)
        if (!stage_owner[i]) {
            stage_take(s, i);
            return 1;
        }
    return 0;
}

/* While connections wait: a stream whose client took no byte for
 * SEND_STALL_MS is reset (nginx's send_timeout), so clients that stop
 * reading cannot hold every staging buffer. */
static void check_stalls(void *arg)
{
    (void)arg;
    stall_check_armed = 0;
    uint32_t now = uptime_ms();
    for (int i = 0; i < STAGES && wait_head; i++)
        if (stage_owner[i] && now - stage_owner[i]->progress_ms >= SEND_STALL_MS)
            conn_abort(stage_owner[i]->self);   /* on_close hands its buffer over */
    if (wait_head) {
        sys_timeout(1000, check_stalls, NULL);
        stall_check_armed = 1;
    }
}

static void wait_for_stage(struct req_state *s)
{
    if (!stall_check_armed) {
        sys_timeout(1000, check_stalls, NULL);
        stall_check_armed = 1;
    }
    if (s->waiting)
        return;
    s->waiting = 1;
    s->next_wait = NULL;
    if (wait_tail)
        wait_tail->next_wait = s;
    else
        wait_head = s;
    wait_tail = s;
}

static void stop_waiting(struct req_state *s)
{
    if (!s->waiting)
        return;
    struct req_state *prev = NULL;
    for (struct req_state *w = wait_head; w; prev = w, w = w->next_wait)
        if (w == s) {
            if (prev)
                prev->next_wait = s->next_wait;
            else
                wait_head = s->next_wait;
            if (wait_tail == s)
                wait_tail = prev;
            break;
        }
    s->waiting = 0;
}

/* Gives the buffer back, straight to the longest waiting connection if any:
 * it continues on a later turn of the main loop. */
static void stage_put(struct req_state *s)
{
    int i = s->stage - 1;
    s->stage = 0;
    s->st_off = s->st_len = 0;
    if (i < 0)
        return;
    struct req_state *w = wait_head;
    stage_owner[i] = NULL;
    if (w) {
        stop_waiting(w);
        stage_take(w, i);
        conn_defer(w->self);
    }
}

/* Reads [s->off, s->off + n) into buf; 0, or -1 after aborting c: the file
 * shrank under us or the host failed, and the promised length cannot be kept. */
static int read_body(struct conn *c, struct req_state *s, uint8_t *buf, uint32_t n, uint32_t *got)
{
    uint32_t max_io = fs_max_io();
    int rc = fs_read(s->file, s->off, buf, n < max_io ? n : max_io);
    if (rc <= 0) {
        if (s->cache_slot)
            fcache_invalidate(s->cache_slot);   /* shrunk or gone: the next request opens afresh */
        conn_abort(c);
        return -1;
    }
    *got = (uint32_t)rc;
    return 0;
}

/* With a staging buffer: one large read, queued over as many turns as lwIP
 * needs. 0 while lwIP takes everything, 1 when on_writable must continue. */
static int stream_staged(struct conn *c, struct req_state *s)
{
    uint8_t *buf = stages[s->stage - 1];
    if (s->st_off == s->st_len) {
        s->st_off = 0;
        if (read_body(c, s, buf, s->left < STAGE_SIZE ? (uint32_t)s->left : STAGE_SIZE, &s->st_len))
            return 1;
    }
    uint32_t n = s->st_len - s->st_off;
    uint32_t sent = conn_send(c, buf + s->st_off, n, CONN_COPY | (n < s->left ? CONN_MORE : 0));
    s->st_off += sent;
    s->off += sent;
    s->left -= sent;
    if (sent)
        s->progress_ms = uptime_ms();
    return conn_closed(c) || s->st_off < s->st_len;
}

/* A small body that fits lwIP's send room: read and queued at once, so small
 * files never wait behind large downloads for a staging buffer (unless lwIP's
 * heap runs low: then it streams like any body, within the STAGES bound). 0 when all
 * was taken, 1 when on_writable must continue (what lwIP refused is read
 * again then). */
static int send_small(struct conn *c, struct req_state *s)
{
    uint32_t got;
    if (read_body(c, s, small_buf, (uint32_t)s->left, &got))
        return 1;
    uint32_t sent = conn_send(c, small_buf, got, CONN_COPY | (got < s->left ? CONN_MORE : 0));
    s->off += sent;
    s->left -= sent;
    return conn_closed(c) || sent < got;
}

/* Queues the pending head, then the body chunk by chunk while lwIP takes it.
 * Returns when the response is all queued (s->busy cleared), when lwIP is
 * full (on_writable calls again), or when the connection was closed. */
static void pump(struct conn *c, struct req_state *s)
{
    if (s->pending) {
        uint32_t n = s->pending_len - s->pending_off;
        s->pending_off += conn_send(c, s->pending + s->pending_off, n, CONN_COPY | (s->left ? CONN_MORE : 0));
        if (conn_closed(c) || s->pending_off < s->pending_len)
            return;
        free_pending(s);
    }
    while (s->left) {
        if (!s->stage && s->left <= SMALL_MAX && s->left <= TCP_SND_BUF - conn_unacked(c) &&
            lwip_stats.mem.avail - lwip_stats.mem.used >= HEAP_RESERVE) {
            if (send_small(c, s))
                return;
            continue;
        }
        if (!s->stage && !stage_get(s)) {
            wait_for_stage(s);   /* stage_put hands one over and resumes us */
            return;
        }
        if (stream_staged(c, s))
            return;
    }
    response_done(c, s);
}

struct head_fields {
    const char *ctype, *etag, *last_modified, *location;
    uint64_t length;            /* Content-Length */
    int no_length;              /* 304: no body and no length */
    uint64_t range_start, range_len, size;   /* 206 / 416 */
};

/* Builds the response head, queues it, and starts the body (s->left from an
 * open s->file) unless head_only. */
static void respond(struct conn *c, struct req_state *s, const struct request *r, int status,
                    const struct head_fields *f, const char *text)
{
    char now[HTTP_DATE_LEN + 1];
    int64_t ms = wallclock_ms();   /* from the RTC: the guest has a clock, so it sends Date */
    http_date_format(ms > 0 ? (int64_t)((uint64_t)ms / 1000) : 0, now);
    int n = snprintf(out, sizeof(out), "HTTP/1.1 %d %s\r\nServer: ukproxy-unikernel\r\nDate: %s\r\nX-Backend: %s\r\n",
                     status, reason(status), now, args->name);
    if (f->ctype)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Content-Type: %s\r\n", f->ctype);
    if (!f->no_length)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Content-Length: %llu\r\n", (unsigned long long)f->length);
    if (f->etag)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "ETag: %s\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n",
                      f->etag, f->last_modified);
    if (status == 206)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Content-Range: bytes %llu-%llu/%llu\r\n",
                      (unsigned long long)f->range_start,
                      (unsigned long long)(f->range_start + f->range_len - 1), (unsigned long long)f->size);
    else if (status == 416)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Content-Range: bytes */%llu\r\n",
                      (unsigned long long)f->size);
    if (f->location)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Location: %s\r\n", f->location);
    if (status == 405)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Allow: GET, HEAD\r\n");
    /* A request we could not parse, or a failure of ours, ends the connection. */
    int keep_alive = r && r->keep_alive && status < 500;
    if (!keep_alive)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Connection: close\r\n");
    else if (r->http10)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "Connection: keep-alive\r\n");
    n += snprintf(out + n, sizeof(out) - (size_t)n, "\r\n");
    int head_only = r && !strcmp(r->method, "HEAD");
    if (text && !head_only)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "%s", text);
    if (n >= (int)sizeof(out))
        n = (int)sizeof(out) - 1;   /* cannot happen: Location is bounded by URI_MAX */
    if (head_only) {
        close_file(s);
        s->left = 0;
    }
    s->close_after = !keep_alive;
    s->busy = 1;
    uint32_t sent = conn_send(c, out, (uint32_t)n, CONN_COPY | (s->left ? CONN_MORE : 0));
    if (conn_closed(c))
        return;
    if (sent < (uint32_t)n) {
        s->pending = mem_malloc((mem_size_t)(n - (int)sent));
        if (!s->pending) {
            conn_abort(c);
            return;
        }
        memcpy(s->pending, out + sent, (size_t)n - sent);
        s->pending_len = (uint32_t)n - sent;
        s->pending_off = 0;
    }
    pump(c, s);
}

/* A short text answer (errors, redirects). */
static void respond_text(struct conn *c, struct req_state *s, const struct request *r, int status,
                         const char *location)
{
    char text[64];
    snprintf(text, sizeof(text), "%d %s\n", status, reason(status));
    struct head_fields f = { .ctype = "text/plain; charset=utf-8", .length = strlen(text), .location = location };
    respond(c, s, r, status, &f, text);
}

/* ---- files ---- */

static int status_for(int err)
{
    switch (-err) {
    case ENOENT: case ENOTDIR: case ELOOP: case ENAMETOOLONG: return 404;
    case ENXIO: return 404;   /* QEMU refuses to open a FIFO, socket or device (and logs it) */
    case EACCES: case EPERM: return 403;
    case EMFILE: case ETIMEDOUT: return 503;
    default: return 500;
    }
}

/* "Location: ./name/" relative to the request, so it stays right behind a
 * proxy that strips a prefix; "./" keeps a name with ':' from reading as a scheme. */
static void redirect_to_dir(struct conn *c, struct req_state *s, const struct request *r)
{
    static char loc[URI_MAX + 8];
    const char *name = r->path;   /* its last segment; r->path starts with '/' */
    for (const char *p = r->path; *p; p++)
        if (*p == '/')
            name = p + 1;
    snprintf(loc, sizeof(loc), "%s%s/%s%s", strchr(name, ':') ? "./" : "", name, r->query ? "?" : "",
             r->query ? r->query : "");
    respond_text(c, s, r, 301, loc);
}

static void serve(struct conn *c, struct req_state *s, struct request *r)
{
    int dir, status = share_path(r->path, path, SHARE_PATH_MAX + 1, &dir);
    if (status) {
        respond_text(c, s, r, status, NULL);
        return;
    }
    struct fs_stat st;
    int rc = fcache_open(path, &s->file, &st, &s->cache_slot);
    if (rc) {
        respond_text(c, s, r, status_for(rc), NULL);
        return;
    }
    s->has_file = 1;   /* closed when the response is queued (response_done, or respond for HEAD) */
    if ((st.mode & S_IFMT) == S_IFDIR) {
        close_file(s);
        if (!dir) {
            redirect_to_dir(c, s, r);
            return;
        }
        size_t n = strlen(path);
        memcpy(path + n, n ? "/index.html" : "index.html", n ? 12 : 11);
        rc = fcache_open(path, &s->file, &st, &s->cache_slot);
        if (rc) {
            respond_text(c, s, r, status_for(rc), NULL);
            return;
        }
        s->has_file = 1;
    } else if (dir) {
        close_file(s);
        respond_text(c, s, r, 404, NULL);   /* "/file.txt/": not a directory */
        return;
    }
    if ((st.mode & S_IFMT) != S_IFREG) {   /* fifos, sockets, devices: never read */
        close_file(s);
        respond_text(c, s, r, 404, NULL);
        return;
    }

    char etag[ETAG_MAX], modified[HTTP_DATE_LEN + 1];
    etag_make(st.ino, st.size, st.mtime_sec, st.mtime_nsec, etag);
    http_date_format((int64_t)st.mtime_sec, modified);
    struct file_answer a;
    int is_get = !strcmp(r->method, "GET");
    conditional_answer(r, is_get, st.size, etag, (int64_t)st.mtime_sec, &a);
    struct head_fields f = { .ctype = mime_type(path), .etag = etag, .last_modified = modified,
                             .length = a.len, .range_start = a.start, .range_len = a.len, .size = st.size };
    if (a.status == 304) {
        f.ctype = NULL;
        f.no_length = 1;
    } else if (a.status == 416) {
        f.ctype = NULL;
        f.length = 0;
    } else if (is_get) {
        s->off = a.start;
        s->left = a.len;
    }
    respond(c, s, r, a.status, &f, NULL);
}

/* ---- requests ---- */

/* After an answer was started: close if it was the last, or come back for
 * the next buffered request on a later turn, after the other connections and
 * the network. A response still streaming comes back through on_writable. */
static void end_turn(struct conn *c, struct req_state *s)
{
    uint32_t len;
    if (conn_closed(c) || s->busy)
        return;
    if (s->close_after)
        conn_close(c);
    else if (conn_rx(c, &len))
        conn_defer(c);
}

/* Answers one buffered request, if a whole one is there. */
static void process(struct conn *c)
{
    struct req_state *s = conn_state(c);
    s->self = c;
    if (conn_closed(c))
        return;
    if (s->busy) {
        pump(c, s);
        if (conn_closed(c) || s->busy)
            return;
    }
    if (s->close_after) {
        conn_close(c);
        return;
    }
    /* A client that pipelines without reading what it was sent waits: its
     * answers would pile up in lwIP's heap, each costing trips to the host. */
    if (conn_unacked(c) > PIPELINE_UNACKED_MAX) {
        conn_want_writable(c);
        return;
    }
    uint32_t len;
    const uint8_t *data = conn_rx(c, &len);
    if (s->skip && len) {
        uint32_t n = s->skip < len ? s->skip : len;
        conn_consume(c, n);
        s->skip -= n;
        data = conn_rx(c, &len);
    }
    if (s->skip || !len) {
        if (conn_peer_closed(c))
            conn_close(c);
        return;
    }
    /* Only the first HEAD_MAX bytes may hold the head (the connection layer
     * may buffer more: its floor is one TCP window). */
    uint32_t end = request_head_end(data, len, HEAD_MAX);
    if (!end) {
        if (len >= HEAD_MAX || conn_rx_full(c)) {   /* no end in HEAD_MAX bytes: name the limit hit */
            int eol = 0;
            while (eol < (int)len && data[eol] != '\n')
                eol++;
            respond_text(c, s, NULL, eol > URI_MAX + 32 ? 414 : 431, NULL);
            end_turn(c, s);
        } else if (conn_peer_closed(c)) {
            conn_close(c);   /* a partial head that can never finish */
        }
        return;
    }
    memcpy(head, data, end);
    head[end] = 0;
    conn_consume(c, end);
    conn_head_done(c);
    struct request r;
    int status = request_parse(head, &r);
    if (status) {
        respond_text(c, s, NULL, status, NULL);
        end_turn(c, s);
        return;
    }
    s->skip = r.content_length;
    if (strcmp(r.method, "GET") && strcmp(r.method, "HEAD")) {
        if (r.content_length > SKIP_MAX)
            r.keep_alive = 0;   /* not worth reading through: close instead */
        respond_text(c, s, &r, 405, NULL);
    } else {
        serve(c, s, &r);
    }
    end_turn(c, s);
}

static void on_close(struct conn *c)
{
    struct req_state *s = conn_state(c);
    close_file(s);
    free_pending(s);
}

/* New input while a response streams waits its turn: on_writable goes on. */
static void on_data(struct conn *c)
{
    struct req_state *s = conn_state(c);
    if (!s->busy)
        process(c);
}

static const struct conn_handlers handlers = {
    .on_data = on_data,
    .on_writable = process,
    .on_resume = process,
    .on_close = on_close,
};

static int static_start(const struct boot_args *a)
{
    const char *tag = cmdline_value("share_tag");
    args = a;
    if (!tag)
        tag = "share";
    int rc = fs_mount(tag, 0);
    if (rc) {
        printf("error: cannot mount the 9P share with tag %s (%d)\n", tag, rc);
        fatal_exit(6);
    }
    conn_limits_from_args(&limits);
    fcache_configure(cmdline_uint("open_file_cache_valid_ms", 0, 3600000, 1000),
                     cmdline_uint("open_file_cache_max", 0, FCACHE_MAX, 32));
    return conn_listen(a->port, &handlers, &limits);
}

static const char *const static_keys[] = { "share_tag", "open_file_cache_valid_ms", "open_file_cache_max", CONN_KEYS, NULL };
SERVICE_DEFINE(static_service, .name = "static", .keys = static_keys, .start = static_start);
