/* HTTP/1.x request heads: strict parsing into a struct request, in place.
 * Strict on purpose: a backend behind a proxy should reject what it does not
 * understand (400) rather than guess, and name the limit it hit (414, 431).
 * The fields a service reads may each appear once: a repeated Host or
 * conditional field is a 400, so a proxy and we never disagree on which one
 * counts. */
#include <string.h>
#include "http_request.h"

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

static int ieq(const char *a, const char *b)
{
    while (*a && lower(*a) == lower(*b))
        a++, b++;
    return !*a && !*b;
}

static int has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *start = v;
        while (*v && *v != ',' && *v != ' ' && *v != '\t')
            v++;
        if ((size_t)(v - start) == tl) {
            size_t i = 0;
            while (i < tl && lower(start[i]) == token[i])
                i++;
            if (i == tl)
                return 1;
        }
    }
    return 0;
}

static int is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Stores v in *slot unless the field was already seen; -1 then. */
static int once(char **slot, char *v)
{
    if (*slot)
        return -1;
    *slot = v;
    return 0;
}

uint32_t request_head_end(const uint8_t *in, uint32_t len, uint32_t max)
{
    uint32_t scan = len < max ? len : max;
    for (uint32_t i = 3; i < scan; i++)
        if (in[i] == '\n' && in[i - 1] == '\r' && in[i - 2] == '\n' && in[i - 3] == '\r')
            return i + 1;
    return 0;
}

/* Parses head[] (NUL-terminated, ends with CRLFCRLF); 0 or an HTTP status. */
int request_parse(char *h, struct request *r)
{
    memset(r, 0, sizeof(*r));
    char *eol = strchr(h, '\r');
    if (!eol || eol[1] != '\n')
        return 400;
    *eol = 0;
    char *next = eol + 2;

    /* request line: method SP target SP HTTP/1.x */
    char *sp1 = strchr(h, ' ');
    if (!sp1 || sp1 == h)
        return 400;
    *sp1 = 0;
    for (char *p = h; *p; p++)
        if (!is_tchar(*p))
            return 400;
    char *target = sp1 + 1, *sp2 = strchr(target, ' ');
    if (!sp2)
        return 400;
    *sp2 = 0;
    if ((size_t)(sp2 - target) > URI_MAX)
        return 414;
    if (target[0] != '/')
        return 400;
    for (char *p = target; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7F || *p == '#')
            return 400;
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/", 5) || !(ver[5] >= '0' && ver[5] <= '9') || ver[6] != '.' ||
        !(ver[7] >= '0' && ver[7] <= '9') || ver[8])
        return 400;
    if (ver[5] != '1')
        return 505;
    r->http10 = ver[7] == '0';
    r->keep_alive = !r->http10;
    r->method = h;
    r->path = target;
    char *q = strchr(target, '?');
    if (q) {
        *q = 0;
        r->query = q + 1;
    }

    /* header fields */
    int have_cl = 0;
    for (char *line = next; *line != '\r';) {
        eol = strchr(line, '\r');
        if (!eol || eol[1] != '\n')
            return 400;
        *eol = 0;
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            return 400;   /* also rejects obs-fold (a line starting with space) */
        *colon = 0;
        for (char *p = line; *p; p++)
            if (!is_tchar(*p))
                return 400;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = eol;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        for (char *p = v; *p; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t')
                return 400;   /* a bare CR or a control byte in a value */
        if (ieq(line, "connection")) {
            if (has_token(v, "close"))
                r->keep_alive = 0;
            else if (has_token(v, "keep-alive"))
                r->keep_alive = 1;
        } else if (ieq(line, "content-length")) {
            uint32_t n = 0;
            if (!*v || have_cl)
                return 400;
            for (; *v; v++) {
                if (*v < '0' || *v > '9')
                    return 400;
                n = n * 10 + (uint32_t)(*v - '0');
                if (n > 1024 * 1024)
                    return 413;
            }
            r->content_length = n;
            have_cl = 1;
        } else if (ieq(line, "transfer-encoding")) {
            return 501;   /* no request bodies worth streaming here */
        } else if (ieq(line, "host")) {
            if (once(&r->host, v))
                return 400;
            r->has_host = 1;
        } else if (ieq(line, "content-type")) {
            r->content_type = v;
        } else if (ieq(line, "x-forwarded-proto")) {
            r->forwarded_proto = v;
        } else if (ieq(line, "if-none-match")) {
            if (once(&r->if_none_match, v))
                return 400;
        } else if (ieq(line, "if-modified-since")) {
            if (once(&r->if_modified_since, v))
                return 400;
        } else if (ieq(line, "range")) {
            if (once(&r->range, v))
                return 400;
        } else if (ieq(line, "if-range")) {
            if (once(&r->if_range, v))
                return 400;
        }
        line = eol + 2;
    }
    if (!r->http10 && !r->has_host)
        return 400;   /* RFC 9112: HTTP/1.1 requests carry Host */
    return 0;
}

int request_query_uint(const char *query, const char *key, uint32_t *out)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1;
            uint32_t n = 0;
            if (*v < '0' || *v > '9')
                return -1;
            for (; *v >= '0' && *v <= '9'; v++) {
                n = n * 10 + (uint32_t)(*v - '0');
                if (n > 100000000)
                    return -1;
            }
            if (*v && *v != '&')
                return -1;
            *out = n;
            return 0;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return -1;
}
