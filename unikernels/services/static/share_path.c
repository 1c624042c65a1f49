/* The one place a request path becomes a share path. Rules, strict on purpose
 * (a static root has no business with odd names):
 * - the target starts with '/', and is split on raw '/' before decoding, so a
 *   decoded "%2f" can never add a level: a slash or backslash that appears
 *   only after decoding is refused (404), as is a raw backslash;
 * - every %XX must have two hex digits (400), and decode to neither NUL nor a
 *   control byte (400);
 * - the decoded bytes must be valid, shortest-form UTF-8 (400): "%c0%ae" is
 *   no '.' here, and no other layer can read it as one;
 * - a component that decodes to "." or "..", or an empty one ("a//b"), is 404:
 *   nothing is resolved, so nothing can climb out of the root;
 * - only the last component may be empty: "/dir/" asks for a directory. */
#include <stdint.h>
#include <string.h>
#include "share_path.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Length of the valid shortest-form UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;   /* continuation byte, overlong lead 0xC0/0xC1, or > U+10FFFF */
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;   /* overlong, out of range, or a surrogate */
    return len;
}

int share_path(const char *target, char *out, size_t out_len, int *trailing_slash)
{
    size_t o = 0;
    int dir = 0;
    *trailing_slash = 0;
    if (!out_len)
        return 414;
    out[0] = 0;
    if (target[0] != '/')
        return 400;
    const char *p = target + 1;
    if (!*p) {
        *trailing_slash = 1;   /* the root is a directory asked for with its slash */
        return 0;
    }
    for (;;) {
        size_t start = o;
        for (; *p && *p != '/'; p++) {
            unsigned char ch = (unsigned char)*p;
            int decoded = 0;
            if (ch == '%') {
                int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
                if (hi < 0 || lo < 0)
                    return 400;
                ch = (unsigned char)(hi << 4 | lo);
                p += 2;
                decoded = 1;
            }
            if (ch < 0x20 || ch == 0x7F)
                return 400;
            if (ch == '\\' || (decoded && ch == '/'))
                return 404;
            if (o + 1 >= out_len || o >= SHARE_PATH_MAX)
                return 414;
            out[o++] = (char)ch;
        }
        size_t len = o - start;
        if (len == 0) {
            if (!*p) {   /* "/a/": the last component is empty */
                dir = 1;
                if (o)
                    o--;   /* drop the '/' we added after the previous component */
                break;
            }
            return 404;
        }
        if (len > SHARE_NAME_MAX)
            return 404;
        if ((len == 1 && out[start] == '.') || (len == 2 && out[start] == '.' && out[start + 1] == '.'))
            return 404;
        if (!*p)
            break;
        p++;   /* the raw '/' */
        if (o + 1 >= out_len || o >= SHARE_PATH_MAX)
            return 414;
        out[o++] = '/';
    }
    out[o] = 0;
    for (size_t i = 0; i < o;) {
        size_t n = utf8_len((const unsigned char *)out + i, o - i);
        if (!n)
            return 400;
        i += n;
    }
    *trailing_slash = dir;
    return 0;
}
