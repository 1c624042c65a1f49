/* Host fuzz of what the api reads from outside: kv's replies (a hostile or
 * broken kv must never crash the api) and request bodies (JSON and forms).
 * Seeded mutations under ASan/UBSan; checks bounds and a few exact answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../kv_port.c"
#include "../json.c"

static uint32_t rng = 99;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

static void mutate(char *buf, size_t *len, size_t cap)
{
    int flips = (int)(next() % 4);
    for (int i = 0; i < flips && *len; i++) {
        size_t at = next() % *len;
        switch (next() % 4) {
        case 0: buf[at] = (char)next(); break;
        case 1: buf[at] = "0123456789*$:+-_\r\n\"\\{}u"[next() % 24]; break;
        case 2: *len = at; break;
        default:
            if (*len + 1 < cap) {
                memmove(buf + at + 1, buf + at, *len - at);
                buf[at] = (char)next();
                (*len)++;
            }
        }
    }
}

static int check_exact(void)
{
    struct kv_reply r[KV_REPLIES_MAX];
    int n;
    const char *s = "+OK\r\n:42\r\n*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n";
    long used = kv_parse_replies(s, (uint32_t)strlen(s), 3, r, KV_REPLIES_MAX, &n);
    if (used != (long)strlen(s) || n != 6 || r[1].num != 42 || r[2].num != 3 || r[4].type != '_' || r[5].len != 0)
        return 1;
    if (kv_parse_replies(s, 12, 3, r, KV_REPLIES_MAX, &n) != 0)   /* incomplete */
        return 1;
    char out[64];
    if (json_member_string("{\"a\":1,\"url\":\"x\\u00e9\\\"y\"}", 26, "url", out, sizeof out) != 5
        || strcmp(out, "x\xc3\xa9\"y"))
        return 1;
    if (json_member_string("{\"url\":\"x\"} junk", 16, "url", out, sizeof out) != -1)
        return 1;
    return 0;
}

int main(void)
{
    if (check_exact()) {
        fprintf(stderr, "parsers_fuzz: exact answers wrong\n");
        return 1;
    }
    static const char *const replies[] = {
        "+OK\r\n", ":17\r\n", "$5\r\nhello\r\n", "$-1\r\n", "*2\r\n$1\r\nx\r\n$-1\r\n", "-ERR no\r\n",
    };
    static const char *const bodies[] = {
        "{\"url\":\"https://example.com/a\"}", "{\"x\":[1],\"url\":\"a\"}", "{\"url\":\"\\ud83d\\ude00\"}",
        "{ \"n\" : -1.5e3 , \"url\" : \"http://a/\\/b\" }",
    };
    char buf[512], out[64];
    struct kv_reply r[KV_REPLIES_MAX];
    for (int round = 0; round < 200000; round++) {
        size_t len = 0;
        int top = 1 + (int)(next() % 4);
        for (int i = 0; i < top; i++) {
            const char *s = replies[next() % 6];
            size_t l = strlen(s);
            memcpy(buf + len, s, l);
            len += l;
        }
        mutate(buf, &len, sizeof buf);
        int n;
        long used = kv_parse_replies(buf, (uint32_t)len, top, r, KV_REPLIES_MAX, &n);
        if (used > (long)len || n > KV_REPLIES_MAX)
            return 1;
        for (int i = 0; used > 0 && i < n; i++)
            if ((r[i].type == '$' || r[i].type == '+') && (r[i].str < buf || r[i].str + r[i].len > buf + len))
                return 1;
        const char *b = bodies[next() % 4];
        len = strlen(b);
        memcpy(buf, b, len);
        mutate(buf, &len, sizeof buf);
        long l = json_member_string(buf, len, "url", out, sizeof out);
        if (l >= (long)sizeof out || (l >= 0 && out[l] != 0))
            return 1;
    }
    printf("parsers_fuzz: 200000 rounds\n");
    return 0;
}
