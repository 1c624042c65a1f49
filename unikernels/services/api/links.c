/* See links.h. Each route is a short chain of kv batches: a step sends one
 * batch, and kv's reply moves the request to its next step. A redirect is one
 * batch (GET the link, INCR its hits): each round trip to kv crosses the
 * service address and, under appendfsync always, waits for a sync, so two
 * would cost twice the time. A code that turns out to be unknown has had its
 * hit counter created by that INCR: it is deleted again (R_UNHIT) after the
 * 404 is sent, with nobody waiting on the answer. */
#include <string.h>
#include <stdio.h>
#include "links.h"
#include "json.h"
#include "kv_port.h"

enum route { R_CREATE, R_GET, R_REDIRECT, R_RECENT, R_UNHIT };

struct link_req {
    struct api_call *call;           /* NULL: abandoned, the answer is dropped */
    uint8_t used, route, step;
    char code[16];
    char base[320];                  /* http(s)://host */
    char url[URL_MAX + 1];
    int64_t seq;
    int ncodes;
    char codes[RECENT][16];
};

static struct link_req reqs[LINKS_INFLIGHT];
static struct kv_batch batch;        /* filled and submitted at once: one is enough */
static char out[RECENT * (2 * URL_MAX + 160) + 64];
static struct links_stats stats;

static const char base62[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

void links_get_stats(struct links_stats *s) { *s = stats; }

static void json_error(struct api_call *call, int status, const char *reason)
{
    size_t n = 0;
    memcpy(out, "{\"error\":", 9);
    n = 9;
    json_string(out, sizeof out, &n, reason, strlen(reason));
    out[n++] = '}';
    api_reply(call, status, "application/json", out, (uint32_t)n, NULL);
}

static void finish(struct link_req *q) { q->used = 0; }

static void step(struct link_req *q);

static void on_kv(void *arg, const struct kv_reply *r, int n, int err);

static void submit(struct link_req *q) { kv_submit(&batch, on_kv, q); }

static void cmd(int argc, const char *const *argv)
{
    if (batch.commands == 0)
        kvb_reset(&batch);
    kvb_cmd(&batch, argc, argv);
}

static void code_of(int64_t seq, char *code)
{
    uint32_t x = (uint32_t)seq * 2654435761u;   /* odd multiplier: a bijection mod 2^32 */
    char tmp[8];
    int n = 0;
    do {
        tmp[n++] = base62[x % 62];
        x /= 62;
    } while (x);
    for (int i = 0; i < n; i++)
        code[i] = tmp[n - 1 - i];
    code[n] = 0;
}

static int valid_code(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 11)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr(base62, s[i]) || !s[i])
            return 0;
    return 1;
}

/* ---- reading the request ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The url field of a form body, percent-decoded; length, -2 absent, -3 too long, -1 bad. */
static long form_url(const char *b, uint32_t n, char *dst, size_t cap)
{
    const char *end = b + n;
    while (b < end) {
        const char *amp = b;
        while (amp < end && *amp != '&')
            amp++;
        if (amp - b > 4 && !memcmp(b, "url=", 4)) {
            size_t o = 0;
            for (const char *p = b + 4; p < amp; p++) {
                char c = *p;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    if (amp - p < 3 || hexval(p[1]) < 0 || hexval(p[2]) < 0)
                        return -1;
                    c = (char)(hexval(p[1]) << 4 | hexval(p[2]));
                    p += 2;
                }
                if (o + 1 >= cap)
                    return -3;
                dst[o++] = c;
            }
            dst[o] = 0;
            return (long)o;
        }
        b = amp + 1;
    }
    return -2;
}

/* NULL when the URL is acceptable, else why not. */
static const char *url_problem(const char *url, long len)
{
    if (len == -3 || len > URL_MAX)
        return "url is longer than 2048 bytes";
    if (len < 0)
        return "a url is required";
    const char *rest;
    if (!strncmp(url, "http://", 7))
        rest = url + 7;
    else if (!strncmp(url, "https://", 8))
        rest = url + 8;
    else
        return "url must start with http:// or https://";
    if (!*rest || *rest == '/' || *rest == '?' || *rest == '#')
        return "url has no host";
    for (long i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return "url contains spaces or control characters";
    }
    return NULL;
}

/* ---- routes ---- */

static struct link_req *take(struct api_call *call, enum route route)
{
    for (int i = 0; i < LINKS_INFLIGHT; i++) {
        if (!reqs[i].used) {
            struct link_req *q = &reqs[i];
            q->used = 1;
            q->call = call;
            q->route = (uint8_t)route;
            q->step = 0;
            q->ncodes = 0;
            return q;
        }
    }
    stats.busy++;
    json_error(call, 503, "too many requests in flight");
    return NULL;
}

static struct link_req *start_create(struct api_call *call, const struct api_request *rq)
{
    static char url[URL_MAX + 1];
    long len = rq->form ? form_url(rq->body, rq->body_len, url, sizeof url)
                        : json_member_string(rq->body, rq->body_len, "url", url, sizeof url);
    if (len == -1) {
        json_error(call, 400, rq->form ? "the form is malformed" : "the body is not a JSON object");
        return NULL;
    }
    const char *problem = url_problem(url, len);
    if (problem) {
        json_error(call, 400, problem);
        return NULL;
    }
    struct link_req *q = take(call, R_CREATE);
    if (!q)
        return NULL;
    memcpy(q->url, url, (size_t)len + 1);
    const char *host = rq->host && *rq->host && strlen(rq->host) < 256 ? rq->host : "localhost";
    snprintf(q->base, sizeof q->base, "%s://%s", rq->https ? "https" : "http", host);
    return q;
}

struct link_req *links_start(struct api_call *call, const struct api_request *rq)
{
    int get = !strcmp(rq->method, "GET") || !strcmp(rq->method, "HEAD");
    struct link_req *q = NULL;
    const char *code = NULL;

    if (!strcmp(rq->path, "/api/links")) {
        if (!strcmp(rq->method, "POST"))
            q = start_create(call, rq);
        else if (get)
            q = take(call, R_RECENT);
        else
            json_error(call, 405, "use GET or POST");
    } else if (!strncmp(rq->path, "/api/links/", 11) || !strncmp(rq->path, "/r/", 3)) {
        int redirect = rq->path[1] == 'r';
        code = rq->path + (redirect ? 3 : 11);
        if (!get)
            json_error(call, 405, "use GET");
        else if (!valid_code(code))
            json_error(call, 404, "no such link");
        else if ((q = take(call, redirect ? R_REDIRECT : R_GET)))
            snprintf(q->code, sizeof q->code, "%s", code);
    } else {
        json_error(call, 404, "no such route");
    }
    if (q)
        step(q);
    return q;
}

void links_abandon(struct link_req *q) { q->call = NULL; }

int links_owns(const char *path)
{
    return !strcmp(path, "/api/links") || !strncmp(path, "/api/links/", 11) || !strncmp(path, "/r/", 3);
}

static void answer_link(struct link_req *q, const struct kv_reply *r)
{
    /* r: the MGET array, then link, created, hits */
    size_t n = 0;
    n += (size_t)snprintf(out, sizeof out, "{\"code\":\"%s\",\"url\":", q->code);
    json_string(out, sizeof out, &n, r[1].str, r[1].len);
    n += (size_t)snprintf(out + n, sizeof out - n, ",\"created\":%.*s,\"hits\":%.*s}",
                          r[2].type == '$' ? (int)r[2].len : 1, r[2].type == '$' ? r[2].str : "0",
                          r[3].type == '$' ? (int)r[3].len : 1, r[3].type == '$' ? r[3].str : "0");
    api_reply(q->call, 200, "application/json", out, (uint32_t)n, NULL);
}

static void answer_recent(struct link_req *q, const struct kv_reply *r, int nr)
{
    size_t n = 1;
    out[0] = '[';
    int first = 1;
    /* r: one MGET array of 3 per code: link, created, hits */
    for (int i = 0; i < q->ncodes && 1 + 3 * i + 2 < nr; i++) {
        const struct kv_reply *x = &r[1 + 3 * i];
        if (x[0].type != '$')
            continue;
        n += (size_t)snprintf(out + n, sizeof out - n, "%s{\"code\":\"%s\",\"url\":", first ? "" : ",", q->codes[i]);
        json_string(out, sizeof out, &n, x[0].str, x[0].len);
        n += (size_t)snprintf(out + n, sizeof out - n, ",\"created\":%.*s,\"hits\":%.*s}",
                              x[1].type == '$' ? (int)x[1].len : 1, x[1].type == '$' ? x[1].str : "0",
                              x[2].type == '$' ? (int)x[2].len : 1, x[2].type == '$' ? x[2].str : "0");
        first = 0;
    }
    out[n++] = ']';
    api_reply(q->call, 200, "application/json", out, (uint32_t)n, NULL);
}

/* Sends the batch of the request's current step (kv's answer calls on_kv). */
static void step(struct link_req *q)
{
    char k1[32], k2[32], k3[32], num[24];
    batch.commands = 0;
    switch (q->route * 8 + q->step) {
    case R_CREATE * 8 + 0:
        cmd(2, (const char *const[]){"INCR", "seq"});
        break;
    case R_CREATE * 8 + 1:
        code_of(q->seq, q->code);
        snprintf(k1, sizeof k1, "link:%s", q->code);
        snprintf(k2, sizeof k2, "created:%s", q->code);
        snprintf(k3, sizeof k3, "recent:%d", (int)(q->seq % RECENT));
        snprintf(num, sizeof num, "%lld", (long long)api_now_ms());
        cmd(3, (const char *const[]){"SET", k1, q->url});
        cmd(3, (const char *const[]){"SET", k2, num});
        cmd(3, (const char *const[]){"SET", k3, q->code});
        break;
    case R_GET * 8 + 0:
        snprintf(k1, sizeof k1, "link:%s", q->code);
        snprintf(k2, sizeof k2, "created:%s", q->code);
        snprintf(k3, sizeof k3, "hits:%s", q->code);
        cmd(4, (const char *const[]){"MGET", k1, k2, k3});
        break;
    case R_REDIRECT * 8 + 0:
        snprintf(k1, sizeof k1, "link:%s", q->code);
        snprintf(k2, sizeof k2, "hits:%s", q->code);
        cmd(2, (const char *const[]){"GET", k1});
        cmd(2, (const char *const[]){"INCR", k2});
        break;
    case R_UNHIT * 8 + 0:
        snprintf(k1, sizeof k1, "hits:%s", q->code);
        cmd(2, (const char *const[]){"DEL", k1});
        break;
    case R_RECENT * 8 + 0:
        cmd(2, (const char *const[]){"GET", "seq"});
        break;
    case R_RECENT * 8 + 1: {
        char keys[RECENT][16];
        const char *argv[RECENT + 1] = {"MGET"};
        int n = 0;
        for (int64_t s = q->seq; s > 0 && n < RECENT; s--, n++) {
            snprintf(keys[n], sizeof keys[n], "recent:%d", (int)(s % RECENT));
            argv[n + 1] = keys[n];
        }
        cmd(n + 1, argv);
        break;
    }
    case R_RECENT * 8 + 2: {
        char keys[3 * RECENT][32];
        const char *argv[3 * RECENT + 1] = {"MGET"};
        for (int i = 0; i < q->ncodes; i++) {
            snprintf(keys[3 * i], sizeof keys[0], "link:%s", q->codes[i]);
            snprintf(keys[3 * i + 1], sizeof keys[0], "created:%s", q->codes[i]);
            snprintf(keys[3 * i + 2], sizeof keys[0], "hits:%s", q->codes[i]);
            for (int j = 0; j < 3; j++)
                argv[1 + 3 * i + j] = keys[3 * i + j];
        }
        cmd(1 + 3 * q->ncodes, argv);
        break;
    }
    }
    submit(q);
}

static void on_kv(void *arg, const struct kv_reply *r, int n, int err)
{
    struct link_req *q = arg;
    if (!q->call) {
        finish(q);
        return;
    }
    if (err || n == 0) {
        stats.kv_errors++;
        json_error(q->call, 503, "the key-value store is not answering");
        finish(q);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (r[i].type == '-') {
            stats.kv_errors++;
            json_error(q->call, 503, "the key-value store refused the request");
            finish(q);
            return;
        }
    }
    q->step++;
    switch (q->route) {
    case R_CREATE:
        if (q->step == 1) {
            q->seq = r[0].num;
            step(q);
            return;
        }
        stats.created++;
        {
            size_t len = (size_t)snprintf(out, sizeof out, "{\"code\":\"%s\",\"url\":", q->code);
            json_string(out, sizeof out, &len, q->url, strlen(q->url));
            len += (size_t)snprintf(out + len, sizeof out - len, ",\"short\":");
            char short_url[360];
            int sl = snprintf(short_url, sizeof short_url, "%s/r/%s", q->base, q->code);
            json_string(out, sizeof out, &len, short_url, (size_t)sl);
            out[len++] = '}';
            api_reply(q->call, 201, "application/json", out, (uint32_t)len, NULL);
        }
        break;
    case R_GET:
        if (n < 4 || r[1].type != '$')
            json_error(q->call, 404, "no such link");
        else
            answer_link(q, r);
        break;
    case R_REDIRECT:
        if (n < 2 || r[0].type != '$' || r[0].len > URL_MAX) {
            json_error(q->call, 404, "no such link");
            q->call = NULL;   /* answered: the clean-up below has nobody waiting */
            q->route = R_UNHIT;
            q->step = 0;
            step(q);
            return;
        }
        memcpy(q->url, r[0].str, r[0].len);
        q->url[r[0].len] = 0;
        stats.redirects++;
        api_reply(q->call, 302, "text/plain", "", 0, q->url);
        break;
    case R_RECENT:
        if (q->step == 1) {
            q->seq = 0;
            if (r[0].type == '$') {
                int64_t v = 0;
                for (uint32_t i = 0; i < r[0].len && r[0].str[i] >= '0' && r[0].str[i] <= '9'; i++)
                    v = v * 10 + (r[0].str[i] - '0');
                q->seq = v;
            }
            if (q->seq == 0) {
                api_reply(q->call, 200, "application/json", "[]", 2, NULL);
                break;
            }
            step(q);
            return;
        }
        if (q->step == 2) {
            for (int i = 1; i < n && q->ncodes < RECENT; i++)
                if (r[i].type == '$' && r[i].len < sizeof q->codes[0]) {
                    memcpy(q->codes[q->ncodes], r[i].str, r[i].len);
                    q->codes[q->ncodes++][r[i].len] = 0;
                }
            if (q->ncodes == 0) {
                api_reply(q->call, 200, "application/json", "[]", 2, NULL);
                break;
            }
            step(q);
            return;
        }
        answer_recent(q, r, n);
        break;
    }
    finish(q);
}
