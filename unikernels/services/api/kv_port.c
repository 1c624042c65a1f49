/* Batch building and reply parsing for kv_port.h: transport-independent. */
#include <string.h>
#include <stdio.h>
#include "kv_port.h"

void kvb_reset(struct kv_batch *b)
{
    b->len = 0;
    b->commands = 0;
    b->overflow = 0;
}

static void put(struct kv_batch *b, const char *s, uint32_t n)
{
    if (b->overflow || n > KV_BATCH_MAX - b->len) {
        b->overflow = 1;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

void kvb_cmd(struct kv_batch *b, int argc, const char *const *argv)
{
    char head[24];
    put(b, head, (uint32_t)snprintf(head, sizeof head, "*%d\r\n", argc));
    for (int i = 0; i < argc; i++) {
        uint32_t n = (uint32_t)strlen(argv[i]);
        put(b, head, (uint32_t)snprintf(head, sizeof head, "$%u\r\n", (unsigned)n));
        put(b, argv[i], n);
        put(b, "\r\n", 2);
    }
    b->commands++;
}

static const char *line_end(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

static int parse_num(const char *s, const char *e, int64_t *out)
{
    int neg = s < e && *s == '-';
    int64_t v = 0;
    if (neg)
        s++;
    if (s == e || e - s > 18)
        return -1;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/* One reply (with its elements) at *pp; 1 done, 0 incomplete, -1 bad. */
static int one(const char **pp, const char *end, struct kv_reply *r, int max, int *n, int depth)
{
    const char *p = *pp;
    if (p >= end)
        return 0;
    const char *eol = line_end(p, end);
    if (!eol)
        return (end - p) > 64 ? -1 : 0;
    if (*n >= max || depth > 2)
        return -1;
    struct kv_reply *x = &r[(*n)++];
    x->type = *p;
    x->str = p + 1;
    x->len = (uint32_t)(eol - p - 1);
    x->num = 0;
    switch (*p) {
    case '+': case '-':
        break;
    case ':':
        if (parse_num(p + 1, eol, &x->num))
            return -1;
        break;
    case '$': {
        int64_t bl;
        if (parse_num(p + 1, eol, &bl) || bl < -1 || bl > 1 << 20)
            return -1;
        if (bl == -1) {
            x->type = '_';
            break;
        }
        if (end - (eol + 2) < bl + 2)
            return 0;
        x->str = eol + 2;
        x->len = (uint32_t)bl;
        eol = eol + 2 + bl;
        if (eol[0] != '\r' || eol[1] != '\n')
            return -1;
        break;
    }
    case '*': {
        if (parse_num(p + 1, eol, &x->num) || x->num < -1 || x->num > max)
            return -1;
        const char *q = eol + 2;
        for (int64_t i = 0; i < x->num; i++) {
            int rc = one(&q, end, r, max, n, depth + 1);
            if (rc <= 0)
                return rc;
        }
        if (x->num == -1)
            x->type = '_';
        *pp = q;
        return 1;
    }
    default:
        return -1;
    }
    *pp = eol + 2;
    return 1;
}

long kv_parse_replies(const char *buf, uint32_t len, int top, struct kv_reply *r, int max, int *n)
{
    const char *p = buf, *end = buf + len;
    *n = 0;
    for (int i = 0; i < top; i++) {
        int rc = one(&p, end, r, max, n, 0);
        if (rc <= 0)
            return rc;
    }
    return (long)(p - buf);
}
