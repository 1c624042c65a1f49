/* RESP2 parsing and replies; see resp.h. The parser never copies: arguments
 * point into the caller's buffer, and an incomplete command is left for the
 * next read (the caller's buffer is bounded, so is a command). */
#include <string.h>
#include <stdio.h>
#include "resp.h"

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

int resp_parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0, limit;

    if (n == 0 || n > 20)
        return -1;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return -1;
    }
    if (s[i] == '0' && n > i + 1)
        return -1;   /* no leading zeros, as Redis's string2ll */
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* An inline command ("PING\r\n", as telnet sends): words split on spaces. */
static long parse_inline(const char *buf, size_t len, struct resp_cmd *cmd, const char **err)
{
    const char *end = buf + len;
    const char *eol = buf;
    while (eol < end && *eol != '\n')
        eol++;
    if (eol == end)
        return 0;
    const char *stop = (eol > buf && eol[-1] == '\r') ? eol - 1 : eol;
    cmd->argc = 0;
    for (const char *p = buf; p < stop;) {
        while (p < stop && (*p == ' ' || *p == '\t'))
            p++;
        if (p == stop)
            break;
        const char *w = p;
        while (p < stop && *p != ' ' && *p != '\t')
            p++;
        if (cmd->argc == RESP_MAX_ARGS) {
            *err = "ERR Protocol error: too many arguments";
            return -1;
        }
        cmd->argv[cmd->argc] = w;
        cmd->argl[cmd->argc++] = (uint32_t)(p - w);
    }
    return (long)(eol + 1 - buf);
}

long resp_parse(const char *buf, size_t len, struct resp_cmd *cmd, const char **err)
{
    const char *p = buf, *end = buf + len;
    int64_t n;

    if (len == 0)
        return 0;
    if (*p != '*')
        return parse_inline(buf, len, cmd, err);
    const char *eol = find_crlf(p, end);
    if (!eol)
        return len > 32 ? (*err = "ERR Protocol error: invalid multibulk length", -1) : 0;
    if (resp_parse_int(p + 1, (size_t)(eol - p - 1), &n) || n > RESP_MAX_ARGS) {
        *err = "ERR Protocol error: invalid multibulk length";
        return -1;
    }
    p = eol + 2;
    cmd->argc = 0;
    for (int64_t i = 0; i < n; i++) {
        if (p >= end)
            return 0;
        if (*p != '$') {
            *err = "ERR Protocol error: expected '$'";
            return -1;
        }
        eol = find_crlf(p, end);
        if (!eol)
            return (end - p) > 32 ? (*err = "ERR Protocol error: invalid bulk length", -1) : 0;
        int64_t bl;
        if (resp_parse_int(p + 1, (size_t)(eol - p - 1), &bl) || bl < 0 || bl > RESP_MAX_BULK) {
            *err = "ERR Protocol error: invalid bulk length";
            return -1;
        }
        p = eol + 2;
        if ((size_t)(end - p) < (size_t)bl + 2)
            return 0;
        if (p[bl] != '\r' || p[bl + 1] != '\n') {
            *err = "ERR Protocol error: bulk string not terminated by CRLF";
            return -1;
        }
        cmd->argv[cmd->argc] = p;
        cmd->argl[cmd->argc++] = (uint32_t)bl;
        p += bl + 2;
    }
    return (long)(p - buf);
}

void resp_raw(struct resp_out *o, const char *s, size_t n)
{
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void prefixed(struct resp_out *o, char type, const char *s)
{
    resp_raw(o, &type, 1);
    resp_raw(o, s, strlen(s));
    resp_raw(o, "\r\n", 2);
}

void resp_simple(struct resp_out *o, const char *s) { prefixed(o, '+', s); }
void resp_error(struct resp_out *o, const char *s) { prefixed(o, '-', s); }
void resp_nil(struct resp_out *o) { resp_raw(o, "$-1\r\n", 5); }

static void number(struct resp_out *o, char type, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%c%lld\r\n", type, (long long)v);
    resp_raw(o, tmp, (size_t)n);
}

void resp_int(struct resp_out *o, int64_t v) { number(o, ':', v); }
void resp_array(struct resp_out *o, long n) { number(o, '*', n); }

void resp_bulk(struct resp_out *o, const char *s, size_t n)
{
    number(o, '$', (int64_t)n);
    resp_raw(o, s, n);
    resp_raw(o, "\r\n", 2);
}
