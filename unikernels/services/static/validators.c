/* ETags and their comparison (RFC 9110 sections 8.8.3, 13.1.2, 13.1.5). */
#include <stddef.h>
#include <string.h>
#include "http_date.h"
#include "validators.h"

static char *put_hex(char *o, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *o++ = tmp[--n];
    return o;
}

void etag_make(uint64_t ino, uint64_t size, uint64_t mtime_sec, uint32_t mtime_nsec, char out[ETAG_MAX])
{
    char *o = out;   /* at most 2 + 3 * 16 + 8 + 3 = 61 bytes */
    *o++ = '"';
    o = put_hex(o, ino);
    *o++ = '-';
    o = put_hex(o, size);
    *o++ = '-';
    o = put_hex(o, mtime_sec);
    *o++ = '.';
    o = put_hex(o, mtime_nsec);
    *o++ = '"';
    *o = 0;
}

static int ows(char c) { return c == ' ' || c == '\t'; }

/* Reads one entity-tag at *p; sets [tag, tag_len) to its quoted form and
 * *weak, advances *p. 0, or -1 if malformed. */
static int read_tag(const char **p, const char **tag, size_t *tag_len, int *weak)
{
    const char *s = *p;
    *weak = 0;
    if (s[0] == 'W' && s[1] == '/') {
        *weak = 1;
        s += 2;
    }
    if (*s != '"')
        return -1;
    const char *e = s + 1;
    while (*e && *e != '"') {
        unsigned char c = (unsigned char)*e;
        if (c < 0x21 || c == 0x7F)
            return -1;   /* etagc excludes controls and spaces */
        e++;
    }
    if (*e != '"')
        return -1;
    *tag = s;
    *tag_len = (size_t)(e + 1 - s);
    *p = e + 1;
    return 0;
}

int etag_list_matches(const char *field, const char *etag)
{
    const char *p = field;
    size_t el = strlen(etag);
    int matched = 0;
    while (ows(*p))
        p++;
    if (*p == '*') {
        for (p++; ows(*p); p++)
            ;
        return !*p;
    }
    for (;;) {
        while (ows(*p) || *p == ',')
            p++;
        if (!*p)
            return matched;
        const char *tag;
        size_t len;
        int weak;
        if (read_tag(&p, &tag, &len, &weak))
            return 0;
        if (len == el && !memcmp(tag, etag, el))
            matched = 1;
        while (ows(*p))
            p++;
        if (*p && *p != ',')
            return 0;
    }
}

int if_range_holds(const char *field, const char *etag, int64_t mtime_sec)
{
    if (field[0] == '"' || field[0] == 'W') {
        const char *p = field, *tag;
        size_t len;
        int weak;
        if (read_tag(&p, &tag, &len, &weak) || *p)
            return 0;
        return !weak && len == strlen(etag) && !memcmp(tag, etag, len);   /* strong comparison */
    }
    int64_t when;
    return !http_date_parse(field, &when) && when == mtime_sec;
}
