/* See json.h. The reader accepts one flat object (string, number, true, false
 * and null values) and is strict about everything else: the api answers 400
 * for what it cannot read. */
#include <string.h>
#include "json.h"

int json_string(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = *len;
    if (o >= cap)
        return -1;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 6 >= cap)
            return -1;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    if (o + 1 >= cap)
        return -1;
    out[o++] = '"';
    *len = o;
    return 0;
}

struct reader {
    const char *p, *end;
};

static void ws(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int put_utf8(char *out, size_t cap, size_t *o, uint32_t cp)
{
    char b[4];
    int n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xC0 | cp >> 6); b[1] = (char)(0x80 | (cp & 63)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12); b[1] = (char)(0x80 | ((cp >> 6) & 63)); b[2] = (char)(0x80 | (cp & 63)); n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18); b[1] = (char)(0x80 | ((cp >> 12) & 63));
        b[2] = (char)(0x80 | ((cp >> 6) & 63)); b[3] = (char)(0x80 | (cp & 63)); n = 4;
    }
    if (*o + (size_t)n >= cap)
        return -1;
    memcpy(out + *o, b, (size_t)n);
    *o += (size_t)n;
    return 0;
}

static int read_u4(struct reader *r, uint32_t *v)
{
    if (r->end - r->p < 4)
        return -1;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0)
            return -1;
        *v = *v << 4 | (uint32_t)h;
    }
    r->p += 4;
    return 0;
}

/* A string at r->p (the opening quote); out may be NULL to skip it. Returns
 * its unescaped length, -1 malformed, -3 too long for out. */
static long string(struct reader *r, char *out, size_t cap)
{
    size_t o = 0;
    int too_long = 0;
    if (r->p >= r->end || *r->p != '"')
        return -1;
    r->p++;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p++;
        uint32_t cp = c;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (r->p >= r->end)
                return -1;
            char e = *r->p++;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (read_u4(r, &cp))
                    return -1;
                if (cp >= 0xD800 && cp < 0xDC00) {   /* a surrogate pair */
                    uint32_t lo;
                    if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
                        return -1;
                    r->p += 2;
                    if (read_u4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    return -1;
                }
                break;
            default:
                return -1;
            }
            if (out && !too_long && put_utf8(out, cap, &o, cp))
                too_long = 1;
            continue;
        }
        if (out && !too_long) {
            if (o + 1 >= cap)
                too_long = 1;
            else
                out[o++] = (char)c;
        }
    }
    if (r->p >= r->end)
        return -1;
    r->p++;
    if (out && !too_long)
        out[o] = 0;
    return too_long ? -3 : (long)o;
}

static int scalar(struct reader *r)
{
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(r->end - r->p) >= n && !memcmp(r->p, words[i], n)) {
            r->p += n;
            return 0;
        }
    }
    const char *start = r->p;
    if (r->p < r->end && *r->p == '-')
        r->p++;
    while (r->p < r->end && ((*r->p >= '0' && *r->p <= '9') || *r->p == '.' || *r->p == 'e' || *r->p == 'E'
                             || *r->p == '+' || *r->p == '-'))
        r->p++;
    return r->p > start ? 0 : -1;
}

long json_member_string(const char *body, size_t n, const char *key, char *out, size_t cap)
{
    struct reader r = {body, body + n};
    char name[32];
    long found = -2;
    ws(&r);
    if (r.p >= r.end || *r.p++ != '{')
        return -1;
    ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            ws(&r);
            long kl = string(&r, name, sizeof name);
            if (kl == -1)
                return -1;
            ws(&r);
            if (r.p >= r.end || *r.p++ != ':')
                return -1;
            ws(&r);
            int wanted = kl >= 0 && !strcmp(name, key);
            if (r.p < r.end && *r.p == '"') {
                long vl = string(&r, wanted ? out : NULL, cap);
                if (vl == -1)
                    return -1;
                if (wanted)
                    found = vl;
            } else if (scalar(&r)) {
                return -1;
            }
            ws(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            return -1;
        }
    }
    ws(&r);
    return r.p == r.end ? found : -1;
}
