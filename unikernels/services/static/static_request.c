/* HTTP/1.x request heads, strict: what a backend does not understand gets a
 * 400 rather than a guess. Besides the framing fields it keeps the four
 * fields a file server answers to; each may appear once (a repeated one is a
 * 400: a proxy and we must not disagree on which one counts). */
#include <string.h>
#include "static_request.h"

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

static int ieq(const char *a, const char *b)
{
    while (*a && lower(*a) == *b)
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
        size_t i = 0;
        if ((size_t)(v - start) == tl)
            while (i < tl && lower(start[i]) == token[i])
                i++;
        if (tl && i == tl)
            return 1;
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

int static_request_parse(char *h, struct static_request *r)
{
    memset(r, 0, sizeof(*r));
    char *eol = strchr(h, '\r');
    if (!eol || eol[1] != '\n')
        return 400;
    *eol = 0;
    char *next = eol + 2;

    /* request line: method SP origin-form SP HTTP/1.x */
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
    if ((size_t)(sp2 - target) > TARGET_MAX)
        return 414;
    if (target[0] != '/')
        return 400;   /* absolute-form and asterisk-form are for proxies and OPTIONS */
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

    int have_cl = 0, have_host = 0;
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
            return 501;
        } else if (ieq(line, "host")) {
            if (have_host++)
                return 400;
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
    if (!r->http10 && !have_host)
        return 400;   /* RFC 9112: HTTP/1.1 requests carry Host */
    return 0;
}
