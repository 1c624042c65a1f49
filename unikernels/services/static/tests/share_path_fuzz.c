/* `make host-tests`: share_path() against a traversal corpus, then 200,000
 * random targets glued from hostile pieces. Every accepted path must stay
 * inside the share (no leading '/', no empty, "." or ".." component, no
 * backslash or control byte) and every refusal must be 400, 404 or 414.
 * The exact rules are checked against a reference model in
 * tests/unikernel/test_static_logic.py; this one runs without Python. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../share_path.c"

static int failures;

static void check_inside(const char *target, const char *out)
{
    if (out[0] == '/')
        goto bad;
    for (const char *p = out; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!n || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            goto bad;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7F || p[i] == '\\')
                goto bad;
        if (!e)
            break;
        p = e + 1;
    }
    return;
bad:
    printf("FAIL: %s -> escaped as \"%s\"\n", target, out);
    failures++;
}

static int run(const char *target)
{
    char out[SHARE_PATH_MAX + 1];
    int dir, st = share_path(target, out, sizeof(out), &dir);
    if (st == 0)
        check_inside(target, out);
    else if (st != 400 && st != 404 && st != 414) {
        printf("FAIL: %s -> status %d\n", target, st);
        failures++;
    }
    return st;
}

static const char *const refused[] = {
    "/..", "/../etc/passwd", "/a/../../b", "/.", "/./a", "/%2e%2e/x", "/%2E%2E/x", "/.%2e/x", "/%2e./x",
    "/..%2fetc", "/%2fetc", "/a%2Fb", "/..%5c..%5cx", "/a\\b", "/%5c", "/x%00.txt", "/%00", "/%0a", "/%7f",
    "//etc/passwd", "/a//b", "/%", "/%2", "/%zz", "/%u002e", "/%c0%ae%c0%ae/x", "/%c0%af", "/%e0%80%ae",
    "/%f0%80%80%ae", "/%ed%a0%80", "/%f4%90%80%80", "/%80", "/%ff", "etc/passwd", "", "http://h/x",
};

static const char *const pieces[] = {
    "/", "/", "a", "b.txt", ".", "..", "%2e", "%2E", "%2f", "%5c", "\\", "%00", "%", "%2", "%zz", "%c0%ae",
    "%c3%a9", "%e2%82%ac", "%ed%a0%80", "%f0%9f%98%80", "%41", "%25", "~", "%0a", "%7f", "\x01", "\xc3\xa9",
};

int main(void)
{
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (run(refused[i]) == 0) {
            printf("FAIL: %s accepted\n", refused[i]);
            failures++;
        }
    srand(12);
    char target[4096];
    for (int round = 0; round < 200000; round++) {
        size_t n = 1;
        target[0] = '/';
        int count = rand() % 14;
        for (int i = 0; i < count; i++) {
            const char *p = pieces[rand() % (int)(sizeof(pieces) / sizeof(pieces[0]))];
            size_t len = strlen(p);
            memcpy(target + n, p, len);
            n += len;
        }
        target[n] = 0;
        run(target);
    }
    /* long inputs: a name of 256 bytes, and a path past SHARE_PATH_MAX */
    memset(target, 'a', 300);
    target[0] = '/';
    target[257] = 0;
    if (run(target) != 404) { printf("FAIL: 256-byte name\n"); failures++; }
    for (int i = 0; i < 2000; i += 2) { target[i] = '/'; target[i + 1] = 'b'; }
    target[2000] = 0;
    if (run(target) != 414) { printf("FAIL: long path\n"); failures++; }
    printf("share_path: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
