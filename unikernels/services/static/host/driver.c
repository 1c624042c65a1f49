/* Host-side driver for the static service's pure modules: one command per
 * stdin line, one answer per stdout line, so tests/unikernel/test_static_logic.py
 * can feed it corpora and generated inputs (built with ASan and UBSan).
 * Built from this file and the modules' .c files (not a `make host-tests`
 * program: it waits for input). Byte-string arguments and results are "x" + hex, so any byte gets through. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../conditional.h"
#include "../http_date.h"
#include "../mime.h"
#include "../range.h"
#include "../share_path.h"
#include "http_request.h"
#include "../validators.h"

/* Decodes "x<hex>" into a fresh NUL-terminated buffer (caller frees). */
static char *unhex(const char *s)
{
    if (!s || s[0] != 'x') {
        fprintf(stderr, "bad argument %s\n", s ? s : "(none)");
        exit(2);
    }
    size_t n = strlen(s + 1) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 1 + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = 0;
    return out;
}

static void put_hex(const char *s)
{
    if (!s) {
        fputs(" -", stdout);
        return;
    }
    fputs(" x", stdout);
    for (; *s; s++)
        printf("%02x", (unsigned char)*s);
}

int main(void)
{
    char line[65536];
    while (fgets(line, sizeof(line), stdin)) {
        char *argv[8] = { 0 };
        int argc = 0;
        for (char *tok = strtok(line, " \n"); tok && argc < 8; tok = strtok(NULL, " \n"))
            argv[argc++] = tok;
        if (!argc)
            continue;
        const char *cmd = argv[0];
        if (!strcmp(cmd, "path")) {
            char *in = unhex(argv[1]), out[SHARE_PATH_MAX + 1];
            int dir, st = share_path(in, out, sizeof(out), &dir);
            printf("%d %d", st, dir);
            put_hex(st ? "" : out);
            free(in);
        } else if (!strcmp(cmd, "mime")) {
            char *in = unhex(argv[1]);
            printf("%s", mime_type(in));
            free(in);
        } else if (!strcmp(cmd, "date_fmt")) {
            char out[HTTP_DATE_LEN + 1];
            http_date_format(strtoll(argv[1], NULL, 10), out);
            printf("%s", out);
        } else if (!strcmp(cmd, "date_parse")) {
            char *in = unhex(argv[1]);
            int64_t secs = 0;
            int rc = http_date_parse(in, &secs);
            printf("%d %" PRId64, rc, secs);
            free(in);
        } else if (!strcmp(cmd, "etag")) {
            char out[ETAG_MAX];
            etag_make(strtoull(argv[1], NULL, 10), strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                      (uint32_t)strtoul(argv[4], NULL, 10), out);
            printf("%s", out);
        } else if (!strcmp(cmd, "inm")) {
            char *f = unhex(argv[1]), *e = unhex(argv[2]);
            printf("%d", etag_list_matches(f, e));
            free(f);
            free(e);
        } else if (!strcmp(cmd, "ifrange")) {
            char *f = unhex(argv[1]), *e = unhex(argv[2]);
            printf("%d", if_range_holds(f, e, strtoll(argv[3], NULL, 10)));
            free(f);
            free(e);
        } else if (!strcmp(cmd, "range")) {
            char *f = unhex(argv[2]);
            uint64_t start = 0, len = 0;
            int kind = range_parse(f, strtoull(argv[1], NULL, 10), &start, &len);
            printf("%d %" PRIu64 " %" PRIu64, kind, start, len);
            free(f);
        } else if (!strcmp(cmd, "request") || !strcmp(cmd, "answer")) {
            char *head = unhex(argv[1]);
            struct request r;
            int st = request_parse(head, &r);
            if (!strcmp(cmd, "request")) {
                printf("%d", st);
                if (!st) {
                    put_hex(r.method);
                    put_hex(r.path);
                    put_hex(r.query);
                    printf(" %d %d %u", r.http10, r.keep_alive, r.content_length);
                    put_hex(r.if_none_match);
                    put_hex(r.if_modified_since);
                    put_hex(r.range);
                    put_hex(r.if_range);
                }
            } else {
                char *etag = unhex(argv[4]);
                struct file_answer a;
                conditional_answer(&r, atoi(argv[2]), strtoull(argv[3], NULL, 10), etag,
                                   strtoll(argv[5], NULL, 10), &a);
                printf("%d %d %" PRIu64 " %" PRIu64, st, a.status, a.start, a.len);
                free(etag);
            }
            free(head);
        } else {
            fprintf(stderr, "unknown command %s\n", cmd);
            return 2;
        }
        putchar('\n');
        fflush(stdout);
    }
    return 0;
}
