/* Host-side fuzzer for the guest's 9P2000.L client (unikernels/fs/9p.c and
 * p9_wire.c, included whole). The transport is replaced by an answering function that parses each
 * request the client sends (checking it is well-formed), builds the reply a
 * server would give, and then, for most requests, damages it: bytes flipped,
 * fields set to boundary values, the reply cut short or padded, the tag or type
 * changed, an Rlerror or a timeout instead. The client must never read or
 * write outside its buffers (ASan/UBSan abort the run) and must return what
 * fs.h promises: a count within what was asked, or a negative errno.
 *   fuzz_9p SEED ITERATIONS     deterministic; exit 0 when every check held
 * Built with clang -fsanitize=fuzzer -DLIBFUZZER, libFuzzer's input is the
 * stream of choices instead (coverage-guided, for bounded runs by hand):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLIBFUZZER -iquote include fs/tests/fuzz_9p.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../p9_wire.c"
#include "../9p.c"

#define BUF (64 * 1024 + 4096)
static uint8_t req[BUF], rep[BUF + 64];
#ifndef LIBFUZZER
static uint64_t rng;
#endif
static long checks, mounted;
static struct fs_counters total;

#ifdef LIBFUZZER
static const uint8_t *choices;
static size_t choices_left;
#endif

static uint32_t rnd(void)
{
#ifdef LIBFUZZER
    uint32_t v = 0;
    for (int i = 0; i < 4 && choices_left; i++, choices_left--)
        v = v << 8 | *choices++;
    return v;
#else
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
#endif
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }
static int chance(unsigned pct) { return below(100) < pct; }

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

/* ---- the transport the client links against ---- */

static int damage_pct = 30;   /* share of replies damaged (0 while mounting, sometimes) */

int v9p_open(const char *tag, uint32_t *buf_size)
{
    if (strcmp(tag, "t"))
        return -ENODEV;
    *buf_size = BUF;
    return 0;
}

uint8_t *v9p_request_buf(void) { return req; }

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

struct out { uint32_t len; };
static void w(struct out *o, const void *v, uint32_t n) { if (o->len + n <= BUF) memcpy(rep + o->len, v, n); o->len += n; }
static void w8(struct out *o, uint8_t v) { w(o, &v, 1); }
static void w16(struct out *o, uint16_t v) { uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) }; w(o, b, 2); }
static void w32(struct out *o, uint32_t v) { w16(o, (uint16_t)v); w16(o, (uint16_t)(v >> 16)); }
static void w64(struct out *o, uint64_t v) { w32(o, (uint32_t)v); w32(o, (uint32_t)(v >> 32)); }
static void wstr(struct out *o, const char *s) { w16(o, (uint16_t)strlen(s)); w(o, s, (uint32_t)strlen(s)); }
static void wqid(struct out *o, uint8_t type) { w8(o, type); w32(o, rnd()); w64(o, rnd()); }

static uint8_t random_qid_type(void)
{
    static const uint8_t types[] = { 0x80, 0x00, 0x02, 0x80, 0x00 };
    return types[below(sizeof(types))];
}

/* The reply a plausible server gives to the request in req[0..len). */
static uint32_t answer(uint32_t len)
{
    if (len < 7 || rd32(req) != len)
        FAIL("request size field %u, sent %u", len >= 4 ? rd32(req) : 0, len);
    uint8_t type = req[4];
    uint16_t tag = rd16(req + 5);
    const uint8_t *b = req + 7;
    struct out o = { 0 };
    w32(&o, 0);
    w8(&o, (uint8_t)(type + 1));
    w16(&o, tag);
    if (type != P9_TVERSION && tag == P9_NOTAG)
        FAIL("request type %u with P9_NOTAG", type);
    if (chance(8) && type != P9_TVERSION) {
        rep[4] = P9_RLERROR;
        w32(&o, 1 + below(130));
    } else {
        switch (type) {
        case P9_TVERSION:
            w32(&o, chance(80) ? rd32(b) : below(2) ? 100 : 1u << 30);
            wstr(&o, chance(90) ? "9P2000.L" : "9P2000");
            break;
        case P9_TATTACH:
            wqid(&o, chance(90) ? 0x80 : 0);
            break;
        case P9_TWALK: {
            uint16_t n = rd16(b + 8);
            if (n > MAX_WALK)
                FAIL("Twalk with %u names", n);
            uint16_t k = chance(80) ? n : (uint16_t)below(n + 1u);
            w16(&o, k);
            for (uint16_t i = 0; i < k; i++)
                wqid(&o, i + 1 < n ? (chance(90) ? 0x80 : random_qid_type()) : random_qid_type());
            break;
        }
        case P9_TGETATTR:
            w64(&o, 0x7FF);
            wqid(&o, random_qid_type());
            w32(&o, chance(50) ? 0100644 : 040755);
            for (int i = 0; i < 3; i++) w32(&o, rnd());
            for (int i = 0; i < 16; i++) w64(&o, (uint64_t)rnd() << (below(2) * 32));
            break;
        case P9_TLOPEN: case P9_TLCREATE:
            wqid(&o, 0);
            w32(&o, below(2) ? 0 : rnd());
            break;
        case P9_TREAD: {
            uint32_t want = rd32(b + 12);
            uint32_t n = chance(90) ? below(want + 1) : want;
            w32(&o, n);
            for (uint32_t i = 0; i < n && o.len < BUF; i++) w8(&o, (uint8_t)rnd());
            break;
        }
        case P9_TWRITE:
            w32(&o, below(rd32(b + 12) + 1));
            break;
        case P9_TREADDIR: {
            uint32_t start = o.len;
            w32(&o, 0);
            unsigned n = below(6);
            static const char *names[] = { ".", "..", "a", "index.html", "dir", "x.txt", "" };
            for (unsigned i = 0; i < n; i++) {
                wqid(&o, random_qid_type());
                w64(&o, chance(90) ? rd32(b + 4) + i + 1 : below(3));
                w8(&o, (uint8_t)below(12));
                wstr(&o, names[below(7)]);
            }
            uint32_t count = o.len - start - 4;
            memcpy(rep + start, &count, 4);
            break;
        }
        case P9_TCLUNK: case P9_TFSYNC: case P9_TRENAMEAT:
            break;
        default:
            FAIL("unexpected request type %u", type);
        }
    }
    if (o.len > BUF)
        o.len = BUF;
    uint32_t size = o.len;
    memcpy(rep, &size, 4);
    if (chance((unsigned)damage_pct)) {
        switch (below(9)) {
        case 0: for (unsigned i = 0, n = 1 + below(4); i < n; i++) rep[below(o.len)] = (uint8_t)rnd(); break;
        case 1: o.len = below(o.len + 1); break;                         /* cut short */
        case 2: o.len += below(64); break;                              /* padded */
        case 3: { uint32_t v = below(2) ? 0xFFFFFFFFu : rnd(); memcpy(rep, &v, 4); break; }   /* size field */
        case 4: rep[5] ^= (uint8_t)(1 + below(255)); break;            /* tag */
        case 5: rep[4] = (uint8_t)rnd(); break;                         /* type */
        case 6: if (o.len >= 11) { uint32_t v = below(2) ? 0xFFFFFFFFu : 0x7FFFFFFF - below(8); memcpy(rep + 7, &v, 4); } break;
        case 7: if (o.len >= 9) { uint16_t v = (uint16_t)(0xFFFF - below(4)); memcpy(rep + 7 + below(o.len - 8), &v, 2); } break;
        default: rep[4] = P9_RLERROR; { uint32_t v = below(2) ? 0 : rnd(); memcpy(rep + 7, &v, 4); } o.len = 11; memcpy(rep, &o.len, 4); break;
        }
    }
    return o.len;
}

int v9p_rpc(uint32_t req_len, const uint8_t **reply, uint32_t *reply_len, uint32_t timeout_ms)
{
    if (req_len > BUF)
        FAIL("request of %u bytes beyond the buffer", req_len);
    uint32_t n = answer(req_len);
    if (chance(2))
        return -ETIMEDOUT;
    if (n > BUF)
        return -EPROTO;   /* the transport refuses a length beyond its buffer */
    /* The reply sits in a heap copy of exactly its length, so ASan sees any read past it. */
    static uint8_t *copy;
    free(copy);
    copy = malloc(n ? n : 1);
    memcpy(copy, rep, n);
    *reply = copy;
    *reply_len = n;
    return 0;
}

/* ---- driving the API ---- */

static void errno_ok(int rc, const char *what)
{
    checks++;
    if (rc > 0 || rc < -4095)
        FAIL("%s returned %d", what, rc);
}

static const char *random_path(void)
{
    static const char *paths[] = { "", "a", "a/b", "index.html", "d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u",
                                   "x.txt", "..", "a//b", "./a", "a/..", "long/" };
    return paths[below(sizeof(paths) / sizeof(paths[0]))];
}

static void one_session(void)
{
    total.requests += p9.counters.requests;
    total.bad_replies += p9.counters.bad_replies;
    total.timeouts += p9.counters.timeouts;
    memset(&fs, 0, sizeof(fs));
    memset(&p9, 0, sizeof(p9));
    memset(&rd, 0, sizeof(rd));
    damage_pct = chance(50) ? 0 : 30;
    int rc = fs_mount("t", (int)below(2));
    errno_ok(rc, "fs_mount");
    if (rc)
        return;
    if (p9.msize < MIN_MSIZE || p9.msize > BUF)
        FAIL("msize %u accepted", p9.msize);
    mounted++;
    damage_pct = 5 + (int)below(40);
    fs_file open[8];
    int nopen = 0;
    static uint8_t data[BUF + 16];
    for (int step = 0, steps = 5 + (int)below(40); step < steps; step++) {
        switch (below(8)) {
        case 0: {
            struct fs_stat st;
            errno_ok(fs_stat(random_path(), &st), "fs_stat");
            break;
        }
        case 1: {
            fs_file f = -1;
            int flags = below(2) ? FS_RDONLY : FS_WRONLY | FS_CREAT | (below(2) ? FS_TRUNC : FS_APPEND);
            rc = fs_open(random_path(), flags, &f);
            errno_ok(rc, "fs_open");
            if (!rc) {
                if (f <= 0 || f >= MAX_FIDS)
                    FAIL("fs_open gave handle %d", f);
                if (nopen < 8)
                    open[nopen++] = f;
                else
                    fs_close(f);
            }
            break;
        }
        case 2: if (nopen) {
            uint32_t n = below(2) ? below(100) : below(BUF + 16);
            memset(data, 0xAA, sizeof(data));
            rc = fs_read(open[below(nopen)], rnd(), data, n);
            checks++;
            if (rc > (int)n || rc < -4095)
                FAIL("fs_read of %u returned %d", n, rc);
            if (rc >= 0 && (uint32_t)rc < sizeof(data) && (uint32_t)rc >= n && data[n] != 0xAA)
                FAIL("fs_read wrote past its count");
        }
            break;
        case 3: if (nopen) {
            uint32_t n = below(BUF + 16);
            rc = fs_write(open[below(nopen)], rnd(), data, n);
            checks++;
            if (rc > (int)n || rc > (int)fs_max_io() || rc < -4095)
                FAIL("fs_write of %u returned %d", n, rc);
        }
            break;
        case 4: if (nopen) {
            uint64_t cookie = rnd();
            char name[1 + 255];
            uint32_t name_len = below(2) ? sizeof(name) : 2 + below(8);
            uint8_t type;
            for (int i = 0; i < 20; i++) {
                memset(name, 'Z', sizeof(name));
                rc = fs_readdir(open[below(nopen)], &cookie, name, name_len, &type);
                errno_ok(rc > 0 ? 0 : rc, "fs_readdir");
                if (rc > 1)
                    FAIL("fs_readdir returned %d", rc);
                if (rc == 1) {
                    size_t l = strnlen(name, name_len);
                    if (l == name_len || l == 0 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
                        FAIL("fs_readdir gave a bad name");
                } else {
                    break;
                }
            }
        }
            break;
        case 5: errno_ok(fs_rename(random_path(), random_path()), "fs_rename"); break;
        case 7: if (nopen) {
            struct fs_stat st;
            errno_ok(fs_fstat(open[below(nopen)], &st), "fs_fstat");
        }
            break;
        case 6:
            if (nopen) {
                int i = (int)below(nopen);
                if (below(2))
                    errno_ok(fs_fsync(open[i]), "fs_fsync");
                fs_close(open[i]);
                open[i] = open[--nopen];
            }
            break;
        }
    }
    while (nopen)
        fs_close(open[--nopen]);
    /* Only the root and fids lost to timeouts may stay allocated. */
    checks++;
    int used = 0;
    for (uint32_t i = 1; i < MAX_FIDS; i++)
        used += bit(fs.fid_used, i) && bit(fs.fid_open, i);
    if (used)
        FAIL("%d fids still open after every handle was closed", used);
}

#ifdef LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    choices = data;
    choices_left = size;
    one_session();
    return 0;
}
#else
int main(int argc, char **argv)
{
    rng = argc > 1 ? strtoull(argv[1], NULL, 0) * 2654435761u + 1 : 1;
    long iterations = argc > 2 ? strtol(argv[2], NULL, 0) : 20000;
    for (long i = 0; i < iterations; i++)
        one_session();
    one_session();   /* folds the last session's counters in */
    printf("ok sessions=%ld mounted=%ld checks=%ld requests=%u bad_replies=%u timeouts=%u\n", iterations, mounted,
           checks, total.requests, total.bad_replies, total.timeouts);
    return 0;
}
#endif
